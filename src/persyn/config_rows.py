"""The config sections of the rows a user trains on (docs/pipeline.md, "Rows a user would train
on"): `generation.regenerate_cut`, `router.quality_floor` and `filters`. Each can be switched off,
and a switched-off section stays out of the run's manifest and keys (`Config.manifest_dict`), so a
run made before they existed resumes as it was.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "EchoFilterConfig",
    "FiltersConfig",
    "QualityFloorConfig",
    "RegenerateCutConfig",
    "RepetitionFilterConfig",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegenerateCutConfig(_Section):
    """A response cut off by the token limit (finish_reason `length`) is generated once more with
    `max_new_tokens_factor` times the budget; still cut, the `cut` filter leaves it out
    (docs/pipeline.md, "Rows a user would train on"). `enabled: false` keeps the first response."""

    enabled: bool = True
    max_new_tokens_factor: float = Field(default=2.0, gt=1.0)


class QualityFloorConfig(_Section):
    """Beyond the paper (docs/method.md, "Quality gates learnability"): a response whose quality
    is below its method's floor cannot be preferred for being learnable (its learnability counts
    as the lowest of its prompt), and a response the row filters drop (cut, a loop...) ranks
    below every kept response of its prompt. A floor per quality method, on that method's
    own scale; None leaves that method ungated. `enabled: false` reproduces the paper's labels."""

    enabled: bool = True
    # answers: 1 = only a fully right answer (all constraints met) is learnable-preferable.
    answers: float | None = 1.0
    # judge: its log P(Yes) - log P(No); below 0 the judge leans to "No".
    judge: float | None = 0.0
    # reward: on the reward model's own scale, which persyn does not know: set it to use it.
    reward: float | None = None

    def floor(self, method: str) -> float | None:
        return (
            getattr(self, method, None) if self.enabled and method in ("answers", "judge", "reward") else None
        )


class RepetitionFilterConfig(_Section):
    """Loops: a span of `ngram` words said at least `min_repeats` times, the repeated spans covering
    more than `max_dup_fraction` of the text's characters (Gopher's duplicate n-gram character
    fraction, Rae et al. 2021; not Gopher's web-page thresholds, which drop short answers that
    restate their question: dataset/filters.py); plus a run of one character (a digit run
    `10000...`), which a word measure cannot see. Texts under `min_words` words skip the span test."""

    enabled: bool = True
    min_words: int = Field(default=20, ge=1)
    max_char_run: int = Field(default=24, ge=2)
    ngram: int = Field(default=10, ge=2)
    min_repeats: int = Field(default=3, ge=2)
    max_dup_fraction: float = Field(default=0.5, ge=0.0, le=1.0)


class EchoFilterConfig(_Section):
    """An answer that copies the prompt back: its longest verbatim run of the prompt's words covers at
    least `min_overlap` of its words, and it is at least `min_length_ratio` as long as the prompt (so
    a short quote extracted from a long text is not an echo). An answer that numbers or reorders the
    prompt's sentences (an extraction task done right) is not one."""

    enabled: bool = True
    min_overlap: float = Field(default=0.7, gt=0.0, le=1.0)
    min_length_ratio: float = Field(default=0.5, ge=0.0)


class FiltersConfig(_Section):
    """The rows left out of every dataset (stage `filter`, docs/pipeline.md). Each filter can be
    switched off; `enabled: false` switches them all off (the rows as generated, as in the paper).
    With `router.quality_floor` on, dropped calibration responses rank below every kept response
    of their prompt in the router's labels."""

    enabled: bool = True
    cut: bool = True  # finish_reason length, after generation.regenerate_cut
    empty: bool = True  # empty or whitespace only
    repetition: RepetitionFilterConfig = Field(default_factory=RepetitionFilterConfig)
    echo: EchoFilterConfig = Field(default_factory=EchoFilterConfig)
    # The wrong shape where it can be checked: no code for a prompt that asks for code; a bare number
    # ("The answer is 4.") for an open instruction without a reference answer.
    shape: bool = True

    def active(self) -> list[str]:
        """The filters that run, in the order they are checked."""
        if not self.enabled:
            return []
        on = {
            "cut": self.cut,
            "empty": self.empty,
            "repetition": self.repetition.enabled,
            "echo": self.echo.enabled,
            "shape": self.shape,
        }
        return [k for k, v in on.items() if v]
