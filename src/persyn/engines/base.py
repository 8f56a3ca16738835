"""The engine protocol: the only code that touches a model implements these three verbs.

Everything above the engines (scoring, router, pipeline) talks to this protocol and never to a
model library, so a teacher can be a local transformers model, a vLLM process or an HTTP server.

Prompts are plain user instructions (strings). Each engine renders them in its model's own format
(chat template, or a completion template for base models), because learnability (PAPER.md Eq. 1)
must be measured in the student's own chat format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]

# The completion template used for base models (no chat template); {prompt} is the instruction.
DEFAULT_COMPLETION_TEMPLATE = "Question: {prompt}\nAnswer:"

# The judging prompt used when a causal LM scores a response: score = log P("Yes") - log P("No")
# for the next token after the rendered judging prompt. Users can override it in the config.
# Chosen with benchmarks/judge.py: of the four prompts tried it ranked good above bad answers most
# often for each zoo judge (docs/router.md, "How far the judge can be trusted").
DEFAULT_JUDGE_TEMPLATE = (
    "Question:\n{prompt}\n\n"
    "Proposed answer:\n{response}\n\n"
    "Is the proposed answer correct, and does it follow every instruction in the question? "
    "Answer Yes or No."
)


class EngineError(RuntimeError):
    """A model could not do what was asked (bad input, context overflow, server refusal...)."""


class ContextLengthError(EngineError):
    """An input does not fit in the model's context window.

    `indices` lists the offending inputs (positions in the call's `prompts`), so that a caller
    can drop or shorten them and retry the rest.
    """

    def __init__(self, message: str, indices: Sequence[int] = ()):
        super().__init__(message)
        self.indices = list(indices)

    def __reduce__(self):  # keep `indices` across processes (vLLM workers, Ray)
        return (type(self), (str(self), self.indices))


def check_fits(model: str, max_len: int, lengths: Sequence[int], verb: str, what: str) -> None:
    """Raise ContextLengthError naming every input longer than `max_len` tokens (checked before
    any model work, by every engine that tokenises client-side)."""
    over = [i for i, n in enumerate(lengths) if n > max_len]
    if over:
        i = over[0]
        raise ContextLengthError(
            f"{model} {verb}: {len(over)} input(s) exceed the context window of "
            f"{max_len} tokens; first: prompt {i}, {what} has {lengths[i]} tokens",
            indices=over,
        )


@dataclass(frozen=True)
class GenerationParams:
    """How a teacher generates. `temperature == 0` means greedy.

    Sampling is seeded per prompt: the same (seed, prompt) gives the same text whatever batch it
    lands in, so a resumed or redistributed run writes exactly what a clean run writes.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def key(self) -> str:
        """A short stable hash of the parameters, used in store keys."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Generation:
    """One response. Token counts are the model's own tokens (for the cost ledger)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    # Extra facts a back end wants recorded (e.g. retries, server latency); must be JSON-safe.
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """A model behind three verbs. Implementations: transformers, vLLM, OpenAI-compatible HTTP."""

    #: A stable identity of the model and everything that changes its outputs (model path or id,
    #: template, dtype...). The store keys rows by it, so changing any of these recomputes rows.
    fingerprint: str

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        """Answer each prompt; results come back in the order of `prompts`."""
        ...

    def loglik(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Mean log-probability of each response's tokens given its prompt (PAPER.md Eq. 1)."""
        ...

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """A reward for each (prompt, response): a reward model's scalar, or a judge's
        log P(Yes) - log P(No)."""
        ...

    def close(self) -> None:
        """Free the model (GPU memory, processes, connections)."""
        ...
