"""Stage train: fine-tune the student on one strategy's dataset (`persyn train CONFIG --strategy`).

    result = ctx.run_stage("train", strategy="persyn")          # TrainResult: model_dir, info
    trained = ctx.result("train")                                # {strategy: train.json dict}

The dataset is the strategy's prompt-completion file (`ctx.result("strategies")`; built through
the strategies stage when missing, which generates only what the store lacks). With
`train.examples` (or `examples=`) a seeded draw of that many rows, by prompt, so that strategies
trained on the same count keep the same prompts wherever they share them (student/compare.py).
Training is TRL's `SFTTrainer` in this process (student/train.py): LoRA or full, the dtype the
hardware computes natively, resumed from its last checkpoint when killed, not redone when
finished. Output: `<run>/students/<strategy>/` (model/, train.json); with another training seed
than `train.seed` (`seed=`), `<run>/students/<strategy>+seed<N>/`.
"""

from __future__ import annotations

import json
from typing import Any

from persyn.stages.context import STUDENTS_DIR, RunContext, StageError
from persyn.stages.student_data import student_name, training_examples

__all__ = ["result", "run", "student_dir"]


def student_dir(ctx: RunContext, strategy: str, seed: int | None = None):
    return ctx.path(STUDENTS_DIR, student_name(ctx, strategy, seed))


def result(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """The finished trainings of this run, by strategy: each `train.json` (empty if none)."""
    from persyn.student.train import RESULT_FILE

    root = ctx.path(STUDENTS_DIR)
    out = {}
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if (p / RESULT_FILE).is_file()):
            info = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
            out[folder.name] = {**info, "model_dir": str(folder / "model")}
    return out


def run(
    ctx: RunContext,
    strategy: str = "persyn",
    *,
    examples: int | None = None,
    force: bool = False,
    oracle: bool = False,
    seed: int | None = None,
):
    """Fine-tune the student on `strategy`'s dataset; see the module docstring. `examples`: how many
    rows (default `train.examples`, else all). `force`: retrain over a finished or conflicting
    training in the same folder. `seed`: the training seed (default `train.seed`); the examples
    drawn stay those of `train.seed`, so seeds differ in initialisation and order only."""
    from persyn.engines.spec import resolve_model
    from persyn.student.compare import ComparisonError, equal_subsamples
    from persyn.student.train import TrainingConflict, train_student

    cfg = ctx.config
    settings = cfg.train
    rows = training_examples(ctx, strategy, oracle=oracle)
    n = examples or settings.examples
    if n is not None:
        try:
            rows = equal_subsamples({strategy: rows}, n, seed=settings.seed)[strategy]
        except ComparisonError as e:
            raise StageError(f"train: {e}") from None
    if not rows:
        raise StageError(f"strategy {strategy!r}: its dataset has no usable rows")
    if ctx.executor is not None:
        ctx.executor.release()  # the teachers' engines are dead weight beside a training (memory)
    out = student_dir(ctx, strategy, seed)
    name = student_name(ctx, strategy, seed)
    if seed is not None:
        settings = settings.model_copy(update={"seed": int(seed)})
    try:
        trained = train_student(
            rows,
            resolve_model(cfg.student.model),
            out,
            settings,
            base_name=cfg.student.model,
            progress=ctx.ui,
            label=f"train · {name}",
            force=force,
        )
    except TrainingConflict as e:
        raise StageError(
            f"{out} holds a student trained with other settings, data or base model; re-run with "
            f"--retrain to train it again (the old one is replaced), or keep it and change nothing ({e})"
        ) from None
    info = trained.info
    if trained.reused:
        done = f"already trained ({info.get('examples')} examples)"
        ctx.ui.say(f"train · {name}: {done} -> {trained.model_dir}")
    else:
        ctx.store.log_event(
            "train",
            "done",
            f"{name}: {info['examples']} examples, {info['steps']} steps, final loss "
            f"{info.get('final_loss')}, {info['wall_s']} s",
            strategy=name,
            examples=info["examples"],
            steps=info["steps"],
        )
    return trained
