"""The engine protocol: the only code that touches a model implements these three verbs.

Everything above the engines (scoring, router, pipeline) talks to this protocol and never to a
model library, so a teacher can be a local transformers model, a vLLM process or an HTTP server.

Prompts are plain user instructions (strings). Each engine renders them in its model's own format
(chat template, or a completion template for base models), because learnability (docs/method.md, Eq. 1)
must be measured in the student's own chat format.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from persyn.engines.spec import EngineSpec
from persyn.store.keys import digest
from persyn.util.errors import PersynError

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


class EngineError(PersynError, RuntimeError):
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


class LocalChecks:
    """The input checks of the engines that tokenise in this process (transformers, vLLM): every
    input is measured against the context window before any model work. Needs `spec`, `kind`,
    `max_len`, and `_closed()` saying whether the engine was closed."""

    spec: EngineSpec
    kind: str
    max_len: int

    def _closed(self) -> bool:
        raise NotImplementedError

    def _need(self, kind: str, verb: str) -> None:
        if self._closed():
            raise EngineError(f"{self.spec.model}: engine is closed")
        if self.kind != kind:
            raise EngineError(f"{self.spec.model} is a {self.kind} model; {verb} needs a {kind} model")

    def _check_fits(self, lengths: list[int], verb: str, what: str) -> None:
        check_fits(self.spec.model, self.max_len, lengths, verb, what)

    def _check_prompts_fit(self, ids: Sequence[Sequence[int]], max_new_tokens: int) -> None:
        check_generation_fits(self.spec.model, [len(x) for x in ids], max_new_tokens, self.max_len)


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise EngineError(f"got {len(prompts)} prompts but {len(responses)} responses")


def check_generation_fits(model: str, lengths: Sequence[int], max_new_tokens: int, max_len: int) -> None:
    """Raise ContextLengthError naming every prompt (by token count) that leaves no room for
    `max_new_tokens` in a context of `max_len` tokens."""
    over = [i for i, n in enumerate(lengths) if n + max_new_tokens > max_len]
    if over:
        i = over[0]
        raise ContextLengthError(
            f"{model}: {len(over)} prompt(s) do not fit the context window of {max_len} "
            f"tokens with max_new_tokens={max_new_tokens}; first: prompt {i} has "
            f"{lengths[i]} tokens ({lengths[i] + max_new_tokens} > {max_len})",
            indices=over,
        )


def _missing_if_too_long(v: Any) -> Any:
    if isinstance(v, ContextLengthError):
        return math.nan  # over the context: missing, as when the whole call names it
    return v if isinstance(v, Exception) else float(v)


def scores_or_missing(
    verb: Callable[[list[str], list[str]], Sequence[Any]],
    prompts: Sequence[str],
    responses: Sequence[str],
    what: str,
) -> list[Any]:
    """Call a scoring verb (an engine's `loglik` or `score`); inputs that overflow the model's
    context come back NaN (missing, never 0: that teacher is absent from the prompt's labels) and
    the rest are scored. Other errors raise, except per-item errors that an engine returns in place
    (`return_exceptions=True`): those are passed through for the caller to record."""
    try:
        values = [_missing_if_too_long(v) for v in verb(list(prompts), list(responses))]
    except ContextLengthError as exc:
        bad = {i for i in getattr(exc, "indices", ()) if 0 <= i < len(prompts)}
        if not bad:
            raise
        keep = [i for i in range(len(prompts)) if i not in bad]
        values = [math.nan] * len(prompts)
        if keep:
            sub = scores_or_missing(verb, [prompts[i] for i in keep], [responses[i] for i in keep], what)
            for i, v in zip(keep, sub, strict=True):
                values[i] = v
        return values
    if len(values) != len(prompts):
        raise RuntimeError(f"{what}: engine returned {len(values)} scores for {len(prompts)} inputs")
    return values


def loglik_or_missing(
    engine: Engine, prompts: Sequence[str], responses: Sequence[str], what: str
) -> list[Any]:
    """`scores_or_missing` of the engine's `loglik`; an empty response, whose mean over zero
    tokens is undefined, is missing too."""
    out: list[Any] = [math.nan] * len(prompts)
    keep = [i for i, r in enumerate(responses) if r and r.strip()]
    if keep:
        vals = scores_or_missing(
            engine.loglik, [prompts[i] for i in keep], [responses[i] for i in keep], what
        )
        for i, v in zip(keep, vals, strict=True):
            out[i] = v
    return out


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
        return digest(asdict(self), spaced=True)


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
        """Mean log-probability of each response's tokens given its prompt (docs/method.md, Eq. 1)."""
        ...

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """A reward for each (prompt, response): a reward model's scalar, or a judge's
        log P(Yes) - log P(No)."""
        ...

    def close(self) -> None:
        """Free the model (GPU memory, processes, connections)."""
        ...
