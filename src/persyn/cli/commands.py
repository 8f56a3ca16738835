"""The `persyn` command line. Commands stay thin: they parse, call the pipeline, print.

Every stage is a command (`calibrate`, `score`, `train-router`, `route`, `generate`, `filter`, `export`,
`report`) and `run` does them all; each resumes from what the run directory holds. Progress goes to
stderr; results (and `--json`) to stdout.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import typer

from persyn.cli.common import (
    _CONFIG,
    FORCE_HELP,
    RETRY_HELP,
    SET_HELP,
    SKIP_HELP,
    _err,
    _fail,
    _out,
    _pipeline,
    _report_error,
)
from persyn.cli.router import router_app
from persyn.cli.student import register_student_commands
from persyn.defaults import DEFAULT_STRATEGIES, STRATEGIES
from persyn.util.errors import PersynError

# `persyn demo` fits its first run, start-up and zoo conversion included, in a time budget.
_STARTED = time.monotonic()

app = typer.Typer(
    name="persyn",
    help="Build a distillation dataset personalised to one student from a pool of teachers "
    "(PerSyn: calibrate, score, train a router, route, generate).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

app.add_typer(router_app, name="router")


def _run_stage(
    config: Path, stage: str, *, force: bool, retry_failed: bool, skip_bad_rows: bool, overrides, quiet=False
):
    """Open the pipeline, run one stage method, close; user errors become messages."""
    try:
        with _pipeline(
            config,
            force=force,
            retry_failed=retry_failed,
            skip_bad_rows=skip_bad_rows,
            overrides=overrides,
            quiet=quiet,
        ) as pipe:
            return getattr(pipe, stage)()
    except PersynError as exc:
        _report_error(exc)


@app.callback()
def _root() -> None:
    """persyn: calibrate all teachers on a subset, score quality and the student's learnability,
    train a router, route every prompt, and let each teacher answer only its prompts."""


@app.command()
def zoo() -> None:
    """List the offline model zoo: each alias, whether its package is installed and converted."""
    from persyn.util.hardware import describe_machine
    from persyn.zoo import print_zoo

    print_zoo()
    m = describe_machine()
    _out.print(
        f"On this machine models load in [bold]{m['auto_dtype']}[/] with dtype auto "
        f"({m['auto_dtype_reason']}), {m['threads']} torch threads; `persyn doctor` says more.",
        soft_wrap=True,
    )


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON only.")) -> None:
    """What this machine gives a model: the CPU and its flags, what torch makes of them, the dtype
    `auto` picks and why, and the torch threads."""
    from persyn.util.hardware import describe_machine

    m = describe_machine()
    if as_json:
        print(json.dumps(m, indent=2))
        return
    yes = {True: "yes", False: "no"}
    rows = [
        ("CPU", f"{m['cpu']}, {m['cpu_count']} CPUs"),
        ("CPU flags", " ".join(m["cpu_flags"]) or "(none of those that matter found)"),
        ("torch", f"{m['torch']}, CPU capability {m['torch_capability']}, native bfloat16: "
                  f"{yes[m['native_bf16']]}"),
        ("limits", " ".join(f"{k}={v}" for k, v in m["limits"].items()) or "none set"),
        ("usable cores", f"{m['usable_cores']} ({m['usable_cores_reason']})"),
        ("torch threads", f"{m['threads']} ({m['threads_reason']}; executor.threads in a config overrides)"),
        ("GPU", ", ".join(m["cuda_devices"]) or "none (models run on the CPU)"),
        ("dtype auto", f"{m['auto_dtype']} ({m['auto_dtype_reason']})"),
    ]  # fmt: skip
    if m["device"] != "cpu":
        rows.append(("dtype auto, CPU", f"{m['auto_dtype_cpu']} ({m['auto_dtype_cpu_reason']})"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        _out.print(f"{key:<{width}}  {value}", markup=False, soft_wrap=True)


@app.command()
def init(
    path: Path = typer.Argument(Path("persyn.yaml"), help="Where to write the starter config."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter config (every key documented)."""
    from importlib import resources

    from persyn.util.atomic import atomic_write

    if path.exists() and not force:
        _fail(f"{path} exists; pass --force to overwrite it")
    text = resources.files("persyn").joinpath("templates", "config.yaml").read_text(encoding="utf-8")
    atomic_write(path, text)
    _out.print(f"wrote {path}; edit it, then: persyn plan {path} && persyn run {path}")


@app.command()
def plan(
    config: Path = _CONFIG,
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON only."),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help=SKIP_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Generations, tokens and cost per teacher, Route-then-Generate against Generate-then-Select,
    before any model runs. Prompt tokens: the teachers' tokenizers where local, else chars/4;
    completion tokens: observed on calibration when the run dir has some, else max_new_tokens."""
    from persyn.config import parse_overrides
    from persyn.pipeline import Pipeline
    from persyn.plan import render_plan

    try:
        pipe = Pipeline.from_config(
            config,
            overrides=parse_overrides(overrides) or None,
            skip_bad_rows=True if skip_bad_rows else None,
            progress=False,
        )
        p = pipe.plan()
    except PersynError as exc:
        _report_error(exc)
    if as_json:
        print(json.dumps(p.to_dict(), indent=2))
    else:
        render_plan(p, _out)


def _stage_command(stage: str, doc: str):
    def command(
        config: Path = _CONFIG,
        force: bool = typer.Option(False, "--force", help=FORCE_HELP),
        retry_failed: bool = typer.Option(False, "--retry-failed", help=RETRY_HELP),
        skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help=SKIP_HELP),
        overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON only."),
    ) -> None:
        result = _run_stage(
            config,
            stage,
            force=force,
            retry_failed=retry_failed,
            skip_bad_rows=skip_bad_rows,
            overrides=overrides,
        )
        if as_json:
            print(json.dumps(_plain(result), indent=2))
        else:
            _print_stage(stage, result)

    command.__doc__ = doc
    command.__name__ = stage
    return command


def _plain(result):
    """A stage's result as JSON-ready data: its `to_dict()`, else its fields (arrays as lists)."""
    import dataclasses

    if hasattr(result, "to_dict"):
        return result.to_dict()
    if dataclasses.is_dataclass(result):
        data = dataclasses.asdict(result)
        return json.loads(json.dumps(data, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    return str(result)


def _print_stage(stage: str, result) -> None:
    if stage == "calibrate":
        _out.print(f"calibration: {len(result.prompt_ids)} prompts, {result.new_generations} new generations")
    elif stage == "score":
        import numpy as np

        _out.print(
            f"scored {len(result.prompt_ids)} prompts x {len(result.teachers)} teachers "
            f"({result.new_scores} new scores; quality missing for {int(np.isnan(result.quality).sum())} "
            f"responses, learnability for {int(np.isnan(result.learnability).sum())})"
        )
    elif stage == "train_router":
        rm = result.router_metrics
        extra = f", held-out hit@1 {rm['hit@1']:.3f}" if rm.get("hit@1") is not None else ""
        _out.print(f"router: {result.path}{extra}")
    elif stage == "route":
        _out.print(result.routing.summary())
        _out.print("all prompts: " + ", ".join(f"{t} {n}" for t, n in result.counts.items()))
    elif stage == "generate":
        _out.print(f"generated {result.new_generations} responses ({result.failed} failed)")
    elif stage == "filter":
        drops = ", ".join(f"{t}: {d}" for t, d in result.dropped.items()) or "none"
        _out.print(f"filtered {result.checked} responses ({result.new} new verdicts); dropped: {drops}")
    elif stage == "export":
        _out.print(f"dataset: {result.path} ({result.n_rows} rows)")
        for fmt, p in result.files.items():
            _out.print(f"  {fmt}: {p}")
        for t, e in result.row_checks.items():
            if e.get("cut") or e.get("dropped"):
                by = ", ".join(f"{k} {v}" for k, v in e.get("by_filter", {}).items())
                _out.print(
                    f"  {t}: {e['cut']} cut at the first try, {e['regenerated']} generated again; "
                    f"{e['dropped']} left out ({by or 'none'})"
                )
    elif stage == "report":
        _out.print(f"report: {result}")
    elif stage == "run":
        print_summary(result)


for _name, _cli, _doc in (
    (
        "calibrate",
        "calibrate",
        "Choose the calibration subset (random or diverse) and have every teacher answer it.",
    ),
    (
        "score",
        "score",
        "Score every calibration response: quality (answers/judge/reward) and learnability (the student).",
    ),
    (
        "train_router",
        "train-router",
        "Train the Bradley-Terry router; measure it against the baselines on held-out calibration prompts.",
    ),
    ("route", "route", "Route every prompt to one teacher (argmax, or under routing.caps / routing.budget)."),
    (
        "generate",
        "generate",
        "Each teacher answers only its routed prompts (failed rows are kept; --retry-failed).",
    ),
    (
        "filter",
        "filter",
        "Check every response against the row filters (cut, empty, repetition, echo, shape).",
    ),
    (
        "export",
        "export",
        "Write the dataset (TRL messages / prompt-completion, sharegpt, Parquet, HF) into <run>/dataset.",
    ),
    (
        "report",
        "report",
        "Write the HTML report (allocation, router vs baselines, cost vs Generate-then-Select).",
    ),
    (
        "run",
        "run",
        "Run every stage (calibrate, score, train-router, route, generate, filter, export, report). "
        "Re-running resumes: finished rows are never recomputed, and a crash loses at most the batch "
        "in flight.",
    ),
):
    app.command(_cli)(_stage_command(_name, _doc))


def print_summary(s) -> None:
    _out.print()
    _out.print(
        f"[bold green]done[/] in {s.seconds:.0f}s: {s.rows} rows from {s.prompts} prompts "
        f"({', '.join(f'{t} {n}' for t, n in s.teacher_counts.items())})"
    )
    _out.print(f"  dataset: [bold]{s.dataset}[/]")
    _out.print(f"  report:  [bold]{s.report / 'index.html' if s.report.is_dir() else s.report}[/]")
    _out.print(
        f"  generations: {s.generations} ({s.calibration} calibration x {len(s.teacher_counts)} teachers + "
        f"{s.prompts - s.calibration} routed) vs {s.gts_generations} for Generate-then-Select "
        f"({s.saving:.1f}x as many); {s.new_generations} new this time"
        + (f", {s.failed} failed (persyn generate --retry-failed)" if s.failed else "")
    )
    rm = s.router_metrics.get("router", {})
    if rm.get("hit@1") is not None:
        base = {k: v.get("hit@1") for k, v in s.router_metrics.items() if k not in ("router", "oracle")}
        best = max((v for v in base.values() if v is not None), default=None)
        _out.print(
            f"  router on held-out calibration prompts: hit@1 {rm['hit@1']:.3f}"
            + (f" (best baseline {best:.3f})" if best is not None else "")
        )


@app.command()
def strategies(
    config: Path = _CONFIG,
    names: str | None = typer.Option(
        None,
        "--strategies",
        help=f"Comma-separated, from: {', '.join(STRATEGIES)} (default: {', '.join(DEFAULT_STRATEGIES)}, "
        "and family-strong when a teacher shares the student's family).",
    ),
    oracle: bool = typer.Option(
        False,
        "--oracle",
        help="Full oracle: every teacher answers and is scored on every prompt (Generate-then-Select "
        "cost); joins the default set. Without it, an oracle named in --strategies covers the "
        "calibration prompts only.",
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    retry_failed: bool = typer.Option(False, "--retry-failed", help=RETRY_HELP),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON only."),
) -> None:
    """Datasets of PerSyn and the baselines from one run, each in <run>/strategies/<name>/,
    generating only what the store lacks; listed with their generation counts in the report."""
    from persyn.stages.strategies import parse_strategies

    try:
        wanted = None if names is None else parse_strategies(names)
        with _pipeline(config, force=force, retry_failed=retry_failed, overrides=overrides) as pipe:
            results = pipe.strategies(wanted, oracle=oracle)
    except PersynError as exc:
        _report_error(exc)
    if as_json:
        print(json.dumps({k: v.summary() for k, v in results.items()}, indent=2))
        return
    from rich.table import Table

    t = Table(title="strategies")
    for col in (
        "strategy",
        "rows",
        "generations",
        "new",
        "mean quality (cal)",
        "mean label (cal)",
        "accuracy",
        "folder",
    ):
        t.add_column(col)
    for r in results.values():
        t.add_row(
            r.name + (" (calibration)" if r.scope == "calibration" else ""),
            str(r.rows),
            str(r.generations),
            str(r.new_generations),
            _f(r.mean_quality),
            _f(r.mean_label),
            "-" if r.accuracy is None else f"{r.accuracy:.3f} (n={r.n_accuracy})",
            str(r.path or "-"),
        )
    _out.print(t)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


@app.command()
def status(config: Path = _CONFIG) -> None:
    """What a run directory holds (read-only; safe while a run is going)."""
    from persyn.config import load_config
    from persyn.store import RunStore

    try:
        cfg = load_config(config)
        store = RunStore.open(cfg.output.dir, readonly=True)
    except PersynError as exc:
        _report_error(exc)
    with store:
        _out.print(f"run {cfg.output.dir}")
        for k, v in store.stats().items():
            _out.print(f"  {k}: {v}")
        from persyn.stages.context import engine_line

        for info in store.get_state("engines", {}).values():
            _out.print(f"  model {engine_line(info)}", markup=False, soft_wrap=True)
        for r in store.response_counts():
            _out.print(
                f"  {r['teacher']} [{r['gen_key']}]: {r['ok']} ok, {r['error']} failed, "
                f"{r['completion_tokens']} completion tokens",
                markup=False,
            )
        for e in store.events()[-15:]:
            _out.print(f"  {e}", markup=False)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--dir", help="Demo run directory."),
    prompts: int | None = typer.Option(
        None,
        "--prompts",
        help="Demo prompts: level-1/2 math with answers and extraction instructions "
        "(default: sized for this machine's measured speed).",
    ),
    calibration: int | None = typer.Option(
        None, "--calibration", help="Calibration prompts, every teacher answers them (default: sized)."
    ),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", help="Generation length of every teacher (default: 512)."
    ),
    force: bool = typer.Option(False, "--force", help="Start the demo afresh (deletes the demo directory)."),
    task: str = typer.Option(
        "demo",
        "--task",
        help="demo: the pipeline on the bundled prompts. evidence / evidence-quick: the evidence miniature "
        "(constrained instructions and arithmetic, every strategy trained and tested; docs/student.md).",
    ),
) -> None:
    """Run the whole pipeline on the bundled demo prompts with three real zoo teachers (Qwen2.5-Coder-0.5B
    with its working, the same model told to give the number only, Gemma-3-270M after worked
    examples) for the student SmolLM2-135M, on CPU; then `persyn compare` on the written config
    trains and evaluates the student on each strategy's data. The first run converts the zoo models,
    measures this machine's speed and picks the number of prompts that ends within 8 minutes, every
    answer allowed 512 tokens (the prompts are ones whose answers end well before); a re-run resumes
    the same demo."""
    from persyn.demo import sizing
    from persyn.demo.project import (
        SHORT_ANSWER_CATEGORIES,
        SHORT_ANSWER_LEVELS,
        DemoSettingsError,
        write_demo,
    )

    if task != "demo":
        return _evidence_demo(task, out, force)

    if force and out.exists():
        if any(out.iterdir()) and not (out / "persyn-demo.yaml").is_file():
            _fail(f"{out} is not a demo directory (no persyn-demo.yaml); not deleting it")
        shutil.rmtree(out)
    size, why = _demo_size(out, prompts, calibration)
    prompts = size.prompts if prompts is None else prompts
    calibration = size.calibration if calibration is None else calibration
    max_new_tokens = size.max_new_tokens if max_new_tokens is None else max_new_tokens
    _err.print(
        f"demo: {prompts} prompts, {calibration} calibration, {max_new_tokens} new tokens ({why})",
        soft_wrap=True,
    )
    try:
        cfg_path = write_demo(
            out,
            n_prompts=prompts,
            calibration=calibration,
            max_new_tokens=max_new_tokens,
            math_levels=SHORT_ANSWER_LEVELS,
            instruction_categories=SHORT_ANSWER_CATEGORIES,
        )
    except (ValueError, DemoSettingsError) as exc:
        _fail(str(exc))
    sizing.save_size(out, sizing.DemoSize(prompts, calibration, max_new_tokens, size.why))
    _err.print(f"demo config: {cfg_path}")
    summary = _run_stage(cfg_path, "run", force=False, retry_failed=False, skip_bad_rows=False, overrides=())
    print_summary(summary)
    _err.print(f"demo: {time.monotonic() - _STARTED:.0f} s in all")
    _out.print(f"  config:  {cfg_path}   (re-run: persyn run {cfg_path})")
    _out.print(f"  next:    persyn compare {cfg_path}   (the student trained on each strategy's data)")


def _demo_size(out: Path, prompts: int | None, calibration: int | None):
    """The demo's size and why: as first sized in `out`, as the options set it, or (first run)
    from this machine's measured speed and what is left of the time budget after converting the zoo."""
    from persyn.demo import instruction_pool, sizing
    from persyn.demo.project import DEMO_MODELS, SHORT_ANSWER_CATEGORIES

    try:
        size = sizing.load_size(out) if (out / "persyn-demo.yaml").is_file() else None
    except ValueError as exc:
        _fail(str(exc))
    if size is not None:
        return size, f"as first sized in {out}: {size.why}"
    if prompts is not None:
        cal = sizing.calibration_for(prompts) if calibration is None else calibration
        return sizing.DemoSize(prompts, cal, sizing.MAX_NEW_TOKENS, "set by options"), "set by options"
    from persyn.zoo import ensure

    for alias in DEMO_MODELS:  # first run: convert now (one bar each), then measure and size
        ensure(alias)
    speed = sizing.measure_speed()
    budget = sizing.BUDGET_S - (time.monotonic() - _STARTED)
    size = sizing.size_for(speed, budget, len(instruction_pool(SHORT_ANSWER_CATEGORIES)))
    return size, f"sized for this machine: {size.why}"


def _evidence_demo(task: str, out: Path, force: bool) -> None:
    """`persyn demo --task evidence[-quick]`: write the evidence project, run the pipeline, then
    `persyn compare` with the pre-registered design (demo/evidence.py)."""
    from persyn.demo.evidence import EvidenceSettingsError, evidence_design, write_evidence
    from persyn.student.compare import comparison_summary

    sizes = {"evidence": "full", "evidence-quick": "quick"}
    if task not in sizes:
        _fail(f"--task {task!r}: choose demo, evidence or evidence-quick")
    if out == Path("runs/demo"):
        out = Path(f"runs/{task}")
    if force and out.exists():
        if any(out.iterdir()) and not (out / "persyn-evidence.yaml").is_file():
            _fail(f"{out} is not an evidence directory (no persyn-evidence.yaml); not deleting it")
        shutil.rmtree(out)
    try:
        cfg_path = write_evidence(out, sizes[task])
        design = evidence_design(sizes[task])
    except (ValueError, EvidenceSettingsError) as exc:
        _fail(str(exc))
    _err.print(f"evidence config: {cfg_path} ({sizes[task]} size); design: {design}", soft_wrap=True)
    print_summary(
        _run_stage(cfg_path, "run", force=False, retry_failed=False, skip_bad_rows=False, overrides=())
    )
    try:
        with _pipeline(cfg_path, overrides=()) as pipe:
            table = pipe.compare(**design)
            doc = pipe.ctx.result("compare")
    except PersynError as exc:
        _report_error(exc)
    _out.print(table.render(), soft_wrap=True)
    for line in comparison_summary(doc):
        _out.print(line, soft_wrap=True)


register_student_commands(app)  # train, eval, compare: after the dataset commands in --help


def main() -> None:
    # vLLM engines spawn worker processes; the CLI is the __main__ guard they need.
    sys.exit(app())


if __name__ == "__main__":
    main()
