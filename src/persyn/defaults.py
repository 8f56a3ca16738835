"""The one home of every default that more than one place reads: the config model (config.py), the
command line (cli/) and the Python API (`router.model.TrainConfig`, `router.baselines`,
`scoring.labels`, `router.encoders`) all take theirs from here, so a default changes in one line.
A leaf: plain values, no imports of persyn or of anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

#: The combined label's weight on learnability (docs/method.md, Eq. 2; the paper's 0.4).
ALPHA = 0.4

#: The router's prompt encoder: the offline MiniLM (trains in seconds on CPU).
ENCODER = "zoo:minilm-l6-v2"


@dataclass(frozen=True)
class RouterDefaults:
    """How the router trains and is measured, unless the config or the command line says otherwise."""

    normalisation: Literal["zscore", "minmax"] = "zscore"
    pooling: Literal["auto", "mean", "last", "cls"] = "auto"
    max_length: int = 256  # encoder tokens per prompt
    encoder_lr: float = 2e-5
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    batch_prompts: int = 64
    max_epochs: int = 300
    patience: int = 20
    val_fraction: float = 0.15  # early stopping, inside the training prompts
    test_fraction: float = 0.2  # held out to measure the router against the baselines


ROUTER = RouterDefaults()

#: Baselines (router/baselines.py): CAR's beta, Mix's share of the strong teacher, kNN's k.
CAR_BETA = 3.0
MIX_SHARE = 0.2
KNN_K = 10

#: Every strategy a dataset can be built for: PerSyn's own and one per baseline.
STRATEGIES = ("persyn", "strong", "family-strong", "random", "mix", "car", "oracle")
#: What `persyn strategies`, `persyn compare` and `Pipeline.strategies()`/`.compare()` build when
#: not told: family-strong joins when a teacher shares the student's family; the oracle only on
#: request (`--oracle`), since over every prompt it costs what Generate-then-Select costs.
DEFAULT_STRATEGIES = ("persyn", "strong", "mix", "car", "random")

#: Model dtypes a config may name (`auto`: the machine's rule, util/hardware.py).
DType = Literal["auto", "bfloat16", "float32", "float16"]
DTYPE_NAMES: tuple[str, ...] = get_args(DType)


def default_strategies(family: bool, oracle: bool = False) -> list[str]:
    """The default strategy set: `family` when a teacher shares the student's family, `oracle`
    when the full oracle was asked for."""
    names = list(DEFAULT_STRATEGIES)
    if family:
        names.insert(2, "family-strong")
    return [*names, "oracle"] if oracle else names
