"""The `train:` and `eval:` config sections: how the student is fine-tuned and evaluated.

    train:
      epochs: 2
      learning_rate: 2.0e-4
      batch_size: 8
      lora: {r: 16, alpha: 32, dropout: 0.05, target: all-linear}   # null: full fine-tune
    eval:
      sets:
        - {name: math, path: eval/math.jsonl, answer_field: answer}
        - {name: instructions, path: eval/instructions.jsonl}
      max_new_tokens: 256

Every field that changes the trained weights is part of `TrainSettings.fingerprint()`; a finished
training with another fingerprint is refused, not silently reused (train.py). Where and how it runs
(`device`, `save_steps`, `gradient_checkpointing`) is left out, so moving a run to a GPU or
checkpointing more often resumes instead of starting over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from persyn.defaults import DType
from persyn.store.keys import digest

__all__ = ["EvalSet", "EvalSettings", "LoraSettings", "TrainSettings"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Section):
    """A LoRA adapter (peft). `target`: module names, or "all-linear" (every linear layer but the
    output head)."""

    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target: list[str] | Literal["all-linear"] = "all-linear"


class TrainSettings(_Section):
    """How the student is fine-tuned (TRL `SFTTrainer`, loss on the response tokens only)."""

    epochs: float = Field(default=2.0, gt=0)
    # 2e-4 suits LoRA (the default); a full fine-tune wants about 2e-5
    learning_rate: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=8, ge=1)
    gradient_accumulation: int = Field(default=1, ge=1)
    max_length: int = Field(default=512, ge=16)  # tokens of prompt + response; longer rows are cut
    seed: int = 0
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    # null: full fine-tune. LoRA trains faster on CPU and the merged model loads like any other.
    lora: LoraSettings | None = Field(default_factory=LoraSettings)
    device: str = "auto"  # auto: cuda when present, else cpu
    # The compute dtype; `auto` follows persyn.util.hardware (bf16 where the CPU computes it natively).
    # Weights stay float32 (bf16 runs as autocast), so small updates are not rounded away.
    dtype: DType = "auto"
    # checkpoint every N optimizer steps (resume point); at most a quarter of the training apart
    save_steps: int = Field(default=50, ge=1)
    # Recompute activations in the backward pass: less memory, ~30% more compute (TRL's default is
    # on; a small student on CPU does not need it).
    gradient_checkpointing: bool = False
    # Train on this many examples of the dataset (a seeded draw by prompt, the same prompts across
    # strategies where they share them); None: all of them, or for compare the smallest dataset's
    # size. Covered by the dataset hash, not the fingerprint.
    examples: int | None = Field(default=None, ge=1)

    def fingerprint(self) -> str:
        """A hash of everything that changes the trained weights (not device or checkpoint spacing;
        dtype stays in: a float32 and a bf16 run give different weights)."""
        how = {"device", "save_steps", "gradient_checkpointing", "examples"}
        return digest(self.model_dump(exclude=how, mode="json"))


class EvalSet(_Section):
    """One held-out prompt file (JSONL, Parquet or CSV, read by `persyn.prompts.load_prompts`).
    With `answer_field`, prompts with an answer get accuracy and the reference's log-likelihood;
    prompts with a `constraints` field get IFEval's constraint metrics; the others get the judge's
    score and the win rate against the untrained student."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    path: Path
    prompt_field: str = "prompt"
    answer_field: str | None = None
    # How answers are checked: numeric | math | exact | auto (persyn.scoring.answers)
    checker: Literal["numeric", "math", "exact", "auto"] = "auto"
    id_field: str | None = None
    # A full reference response (e.g. a worked solution) whose log-likelihood is measured instead
    # of "The answer is {answer}."
    reference_field: str | None = None
    limit: int | None = Field(default=None, ge=1)
    # Answer (generate for) only the first N items: accuracy, judge score and win rate cover those,
    # the reference log-likelihood metrics (one forward pass each) cover every item.
    answer_limit: int | None = Field(default=None, ge=0)
    # test: every compared model is scored on it. validation: only the PerSyn arms of an alpha grid
    # (`persyn compare --alpha-grid`), to choose alpha; the chosen one is then reported on test.
    split: Literal["test", "validation"] = "test"


class EvalSettings(_Section):
    """How a student is evaluated (evaluate.py). The judge defaults to the run's quality judge."""

    sets: list[EvalSet] = Field(default_factory=list)
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=16, ge=1)
    # The win rate needs a judge that answers "A" or "B"; off skips it (it costs 4 judge passes).
    win_rate: bool = True
    # Seconds per answer check (math-verify runs in a worker pool); a timeout scores 0.
    answer_timeout_s: float = Field(default=5.0, gt=0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    resamples: int = Field(default=2000, ge=100)
    seed: int = 0

    def names(self, split: str | None = None) -> list[str]:
        """The names of the eval sets of a split (`test`, `validation`), or of all of them."""
        return [s.name for s in self.sets if split is None or s.split == split]

    @model_validator(mode="after")
    def _unique_names(self) -> EvalSettings:
        names = [s.name for s in self.sets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"eval.sets: names must be unique, repeated: {', '.join(dup)}")
        return self
