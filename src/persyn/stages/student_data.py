"""The student's training data, shared by the train and compare stages: each strategy's dataset
rows as SFT examples (a helper module, not a stage)."""

from __future__ import annotations

from persyn.stages.context import RunContext, StageError

__all__ = ["training_examples", "usable_counts"]


def training_examples(ctx: RunContext, strategy: str, *, oracle: bool = False) -> list:
    """Every usable row of `strategy`'s dataset as SFT examples (building the dataset if needed)."""
    from persyn.student.train import load_sft_examples

    built = ctx.result("strategies").get(strategy)
    if built is None or not _sft_file(built.files):
        ctx.ui.say(f"[bold]train[/]: building the {strategy} dataset first")
        built = ctx.run_stage("strategies", names=[strategy], oracle=oracle)[strategy]
    path = _sft_file(built.files)
    if path is None:
        raise StageError(
            f"strategy {strategy!r} has no dataset to train on ({built.rows} rows; output.formats needs "
            "prompt_completion or messages)"
        )
    return [e for e in load_sft_examples(path) if e.completion.strip()]


def _sft_file(files: dict):
    return files.get("prompt_completion") or files.get("messages")


def usable_counts(ctx: RunContext, names: list[str], *, oracle: bool = False) -> dict[str, int]:
    """How many usable rows (non-empty answers) each strategy's dataset has."""
    return {name: len(training_examples(ctx, name, oracle=oracle)) for name in names}


def student_name(ctx: RunContext, strategy: str, seed: int | None = None) -> str:
    """The name a trained student goes by (its folder, `persyn eval --model`): the strategy, plus
    `+seed<N>` when trained with another seed than `train.seed`."""
    if seed is None or seed == ctx.config.train.seed:
        return strategy
    return f"{strategy}+seed{seed}"
