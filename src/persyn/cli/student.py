"""The student's commands: `persyn train`, `persyn eval` and `persyn compare` (stages train, eval,
compare; docs/student.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from persyn.cli.common import _CONFIG, SET_HELP, _err, _out, _pipeline, _report_error
from persyn.defaults import DEFAULT_STRATEGIES, STRATEGIES
from persyn.util.errors import PersynError

RETRAIN_HELP = "Train again although a finished (or differently configured) student is in the folder."
STRATEGY_NAMES = ", ".join(STRATEGIES)


def _interval(d: dict) -> str:
    if not d or d.get("n", 0) == 0 or d.get("mean") is None:
        return "-"
    return f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}] (n={d['n']})"


def train(
    config: Path = _CONFIG,
    strategy: str = typer.Option("persyn", "--strategy", help=f"Whose dataset: {STRATEGY_NAMES}."),
    examples: int | None = typer.Option(
        None,
        "--examples",
        help="Train on this many rows (a seeded draw; default: train.examples, else all).",
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Training seed (default train.seed); another seed trains <strategy>+seed<N>."
    ),
    retrain: bool = typer.Option(False, "--retrain", help=RETRAIN_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print train.json only."),
) -> None:
    """Fine-tune the student on a strategy's dataset with TRL's SFTTrainer (the `train:` section:
    LoRA or full, epochs, learning rate...). Writes <run>/students/<strategy>/ (model, tokenizer,
    train.json); a killed training resumes from its last checkpoint, a finished one is not redone."""
    try:
        with _pipeline(config, overrides=overrides) as pipe:
            result = pipe.train(strategy, examples=examples, retrain=retrain, seed=seed)
    except PersynError as exc:
        _report_error(exc)
    info = result.info
    if as_json:
        print(json.dumps(info, indent=2))
        return
    loss = info.get("loss_curve") or []
    _out.print(
        f"[bold]{strategy}[/]: {info['examples']} examples, {info['steps']} steps"
        + (f", loss {loss[0][1]:.3f} -> {loss[-1][1]:.3f}" if loss else "")
        + f", {info['wall_s']:.0f} s ({info['dtype']} on {info['device']})"
        + ("  (already trained)" if result.reused else ""),
        soft_wrap=True,
    )
    _out.print(f"  model: {result.model_dir}")


def evaluate(
    config: Path = _CONFIG,
    model: str = typer.Option(
        "base", "--model", help="base (the untrained student), a trained strategy's name, or a model folder."
    ),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON only."),
) -> None:
    """Evaluate a student on the held-out sets of `eval:` (greedy answers through the engine):
    accuracy by the answer verifier and the reference answer's log-likelihood where items have
    answers; the judge's score and the two-order win rate against the untrained student where they
    do not. Each with a 95% bootstrap interval. Answers and scores are rows of the run store: a
    re-run computes only what is missing."""
    try:
        with _pipeline(config, overrides=overrides) as pipe:
            results = pipe.evaluate(model)
    except PersynError as exc:
        _report_error(exc)
    if as_json:
        print(json.dumps({name: r.to_dict() for name, r in results.items()}, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"eval · {model}")
    for col in ("set", "metric", "mean [95% interval] (n)"):
        t.add_column(col)
    for name, r in results.items():
        for metric, iv in r.metrics.items():
            t.add_row(name, metric, _interval(iv.to_dict()))
    _out.print(t)


def _numbers(text: str | None, kind, flag: str):
    if text is None:
        return None
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{flag} {text!r}: expected comma-separated numbers") from None


def compare(
    config: Path = _CONFIG,
    strategies: str | None = typer.Option(
        None,
        "--strategies",
        help=f"Comma-separated, from: {STRATEGY_NAMES} (default: {', '.join(DEFAULT_STRATEGIES)}, and "
        "family-strong when a teacher shares the student's family).",
    ),
    oracle: bool = typer.Option(
        False,
        "--oracle",
        help="Add the full oracle (every teacher answers every prompt, as in Generate-then-Select).",
    ),
    alpha_grid: str | None = typer.Option(
        None,
        "--alpha-grid",
        help="Comma-separated alphas (e.g. 0,0.2,0.4,0.6,0.8): PerSyn with a router per alpha, alpha "
        "chosen on the eval sets with split: validation by the --primary metric, reported on test.",
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Comma-separated training seeds for PerSyn and Strong (e.g. 0,1)."
    ),
    primary: str | None = typer.Option(
        None,
        "--primary",
        help="The comparison named before the run, ARM:AGAINST:METRIC "
        "(e.g. persyn:strong:constraints_strict); the other tests are reported as exploratory "
        "(Holm-adjusted).",
    ),
    retrain: bool = typer.Option(False, "--retrain", help=RETRAIN_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print compare.json only."),
) -> None:
    """Build each strategy's dataset, train the student on each with identical settings, seed and
    number of examples, evaluate each beside the untrained student, and print one table (the
    paper's Table 2): every metric with its interval, the paired difference against the untrained
    student and against Strong, and each strategy's generation cost. Also <run>/compare.json and a
    section of the report. Every step resumes."""
    try:
        with _pipeline(config, overrides=overrides) as pipe:
            table = pipe.compare(
                strategies,
                oracle=oracle,
                retrain=retrain,
                alpha_grid=_numbers(alpha_grid, float, "--alpha-grid"),
                seeds=_numbers(seeds, int, "--seeds"),
                primary=primary,
            )
            doc = pipe.ctx.result("compare")
            report = pipe.run_dir / "report" / "index.html"
    except PersynError as exc:
        _report_error(exc)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    _out.print(table.render(), soft_wrap=True)
    from persyn.student.compare import comparison_summary

    for line in comparison_summary(doc):
        _out.print(line, soft_wrap=True)
    _err.print(f"compare.json and the report: {report}")


def register_student_commands(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)
    app.command("compare")(compare)
