"""`persyn router train|eval`: a router from a score file you already have (no generation at all).

train: a quality-only router (`scoring.labels.QUALITY_ONLY`: a score file has no learnability) on
a wide or long score file (router/matrix.py), holding out `--test-size` of the prompts (chosen by
seed and prompt text) for evaluation.
eval: every metric for the router and each applicable baseline on prompts the router never saw.
The router's JSON lists the hashes of every prompt it trained on (train + validation); eval drops
those, so on the training file what remains is exactly its held-out split, and on another file it
is the whole file (minus any overlap, reported).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from persyn.defaults import ENCODER, KNN_K, MIX_SHARE, ROUTER

router_app = typer.Typer(
    help="Train and evaluate a router from a score file (wide JSONL or long CSV/JSONL).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

CALIBRATION_FILE = "calibration.jsonl"
_err = Console(stderr=True)


def _fail(msg: str) -> None:
    _err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_scores(path: Path):
    from persyn.router.matrix import ScoreFileError, load_score_matrix

    try:
        m = load_score_matrix(path)
    except ScoreFileError as exc:
        _fail(str(exc))
    if m.bad_rows:
        _err.print(f"[yellow]skipped {len(m.bad_rows)} malformed row(s):[/]", highlight=False)
        for b in m.bad_rows[:20]:
            _err.print(f"  {b}", highlight=False, markup=False, soft_wrap=True)
        if len(m.bad_rows) > 20:
            _err.print(f"  ... and {len(m.bad_rows) - 20} more", highlight=False)
    return m


def _complete(m):
    """Rows where every model has a score (the oracle and the metrics need them)."""
    keep = ~np.isnan(m.values).any(axis=1)
    if not keep.all():
        _err.print(
            f"[yellow]{int((~keep).sum())} prompt(s) lack some model's score; "
            "they are left out of evaluation[/]"
        )
    return m.subset(keep)


@router_app.command()
def train(
    scores: Path = typer.Option(..., "--scores", help="Score file: wide JSONL or long CSV/JSONL."),
    out: Path = typer.Option(..., "--out", help="Directory to write the router into."),
    encoder: str = typer.Option(ENCODER, help="Zoo alias, model folder or hub id."),
    pooling: str = typer.Option(ROUTER.pooling, help="auto | mean | last | cls (auto: the model's own)."),
    seed: int = typer.Option(0, help="Seed for the splits and training."),
    test_size: float = typer.Option(
        ROUTER.test_fraction, help="Share of prompts held out for `router eval`."
    ),
    val_size: float = typer.Option(
        ROUTER.val_fraction, help="Share of training prompts used for early stopping."
    ),
    normalisation: str = typer.Option(
        ROUTER.normalisation, help="Within-prompt normalisation: zscore | minmax."
    ),
    hidden: int = typer.Option(ROUTER.hidden, help="Hidden width of the coefficient head."),
    max_epochs: int = typer.Option(
        ROUTER.max_epochs, help="Upper bound on epochs (early stopping usually ends sooner)."
    ),
    finetune_encoder: bool = typer.Option(False, help="Train the encoder end to end (GPU advised)."),
    max_length: int = typer.Option(ROUTER.max_length, help="Encoder max tokens per prompt."),
    device: str = typer.Option("cpu", help="Torch device for the encoder (and head when fine-tuning)."),
) -> None:
    """Train a quality-only router on a score file (it has no learnability to weigh)."""
    from persyn.router.encoders import EncoderError, load_encoder
    from persyn.router.io import save_router
    from persyn.router.model import TrainConfig, holdout_mask, prompt_hash
    from persyn.scoring.labels import QUALITY_ONLY, quality_labels

    m = _load_scores(scores)
    test = holdout_mask(m.prompts, test_size, seed, salt="test")
    fit = m.subset(~test)
    try:
        cfg = TrainConfig(
            seed=seed,
            val_fraction=val_size,
            hidden=hidden,
            max_epochs=max_epochs,
            finetune_encoder=finetune_encoder,
            alpha=QUALITY_ONLY,
            normalisation=normalisation,
        )
        labels = quality_labels(fit.values, normalisation)  # type: ignore[arg-type]
    except ValueError as exc:
        _fail(str(exc))
    try:
        with _err.status(f"loading encoder {encoder}"):
            enc = load_encoder(encoder, pooling=pooling, max_length=max_length, device=device)  # type: ignore[arg-type]
    except EncoderError as exc:
        _fail(str(exc))
    _err.print(
        f"{len(m)} prompts x {len(m.teachers)} models; training on {len(fit)}, holding out {int(test.sum())}",
        highlight=False,
    )
    router, report = _train_with_bar(fit, labels, enc, cfg)
    split = {
        "seed": seed,
        "test_size": test_size,
        "scores_file": str(scores),
        "scores_digest": m.digest(),
        "test_prompts": sorted(prompt_hash(p) for p in np.asarray(m.prompts, dtype=object)[test]),
    }
    save_router(router, out, extra={"split": split})
    fit.write_wide_jsonl(out / CALIBRATION_FILE)
    acc = report.val_pair_accuracy
    Console().print(
        f"router for {len(fit.teachers)} models saved to [bold]{out}[/]\n"
        f"  {report.n_train_prompts} training prompts, {report.n_train_pairs} pairs, "
        f"{report.epochs} epochs (best {report.best_epoch}), "
        f"validation pair accuracy {'n/a' if acc is None else f'{acc:.3f}'}, "
        f"{report.embed_seconds + report.train_seconds:.1f}s\n"
        f"  evaluate: persyn router eval --router {out} --scores {scores}",
        highlight=False,
    )


def _train_with_bar(fit, labels, enc, cfg):
    """`train_router` with a progress bar of epochs on stderr; a ValueError ends the command."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from persyn.router.model import train_router

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
    ) as bar:
        task = bar.add_task("training", total=cfg.max_epochs, info="")

        def on_epoch(info: dict) -> None:
            vl = info["val_loss"]
            bar.update(
                task,
                completed=info["epoch"],
                info=f"epoch {info['epoch']} loss {info['train_loss']:.3f}"
                + (f" val {vl:.3f}" if vl is not None else ""),
            )

        try:
            return train_router(fit.prompts, labels, fit.teachers, encoder=enc, config=cfg, progress=on_epoch)
        except ValueError as exc:
            _fail(str(exc))


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def baseline_matrices(teachers, calib, calib_emb, prompts, emb, normalisation: str, **settings):
    """Each baseline's scores of `prompts` (name -> matrix) and notes: fitted on the `calib` score
    matrix (None: no calibration file) by `build_baselines`, the function the report's measurement
    and the strategies use. A score file has no learnability, so CAR is left out, with a note."""
    from persyn.router.baselines import build_baselines
    from persyn.scoring.labels import quality_labels

    quality = None if calib is None else calib.values
    labels = None if calib is None else quality_labels(calib.values, normalisation)  # type: ignore[arg-type]
    fitted = build_baselines(teachers, quality, None, labels, calib_emb, **settings)
    matrices = {name: b.scores(prompts, embeddings=emb) for name, b in fitted.routers.items()}
    notes = list(fitted.notes)
    if calib is None:
        notes.append("pass --calibration to fit strongest, mix and knn")
    else:
        mix = ""
        if fitted.mix_pair:
            mix = f"; mix = {fitted.mix_pair[0]} {settings['mix_share']:.0%} / {fitted.mix_pair[1]}"
        notes.append(f"baselines fitted on {len(calib)} calibration prompts{mix}")
    return matrices, notes


@router_app.command("eval")
def evaluate(
    router_dir: Path = typer.Option(..., "--router", help="Router directory (from `router train` or a run)."),
    scores: Path = typer.Option(..., "--scores", help="Score file with the true scores."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object {name: metrics} only."),
    calibration: Path | None = typer.Option(
        None, help="Scores to fit the baselines on (default: the router's calibration.jsonl)."
    ),
    k: int = typer.Option(KNN_K, "--k", help="Neighbours for the kNN baseline."),
    seed: int = typer.Option(0, help="Seed of the random and Mix baselines."),
    mix_share: float = typer.Option(MIX_SHARE, help="Mix: share of prompts to the strongest model."),
    mix_weak: str | None = typer.Option(
        None, help="Mix: the other model (default: the rule of `build_baselines`; here the second strongest)."
    ),
    device: str = typer.Option("cpu", help="Torch device for the encoder."),
) -> None:
    """Compare the router with every applicable baseline on prompts it did not train on.

    Metrics: Hit@1, Hit@3, regret, mean score, share of the oracle's gain recovered, allocation.
    """
    from persyn.router.baselines import OracleRouter
    from persyn.router.io import RouterFileError, load_router, read_router_config
    from persyn.router.metrics import compare
    from persyn.scoring.labels import QUALITY_ONLY, quality_labels

    try:
        cfg = read_router_config(router_dir)
    except RouterFileError as exc:
        _fail(str(exc))
    teachers = list(cfg["teachers"])
    m = _load_scores(scores)
    if sorted(m.teachers) != sorted(teachers):
        _fail(
            f"{scores} scores models {m.teachers} but the router at {router_dir} was trained for {teachers}"
        )
    m = m.reorder(teachers)
    if mix_weak is not None and mix_weak not in teachers:
        _fail(f"Mix weak teacher {mix_weak!r} is not one of {teachers}")
    unseen, where = _unseen(cfg, m.prompts)
    ev = _complete(m.subset(unseen))
    if len(ev) == 0:
        _fail(f"no prompt of {scores} is left to evaluate on ({where})")
    normalisation = cfg.get("normalisation") or "zscore"
    if cfg.get("alpha") not in (None, QUALITY_ONLY):
        _err.print(
            f"[yellow]the router was trained with alpha={cfg['alpha']}; a score file has "
            f"quality only, so evaluation uses alpha={QUALITY_ONLY}[/]"
        )
    labels = quality_labels(ev.values, normalisation)

    calib = _calibration_scores(calibration, router_dir, m, unseen, teachers)

    with _err.status("loading router"):
        try:
            router = load_router(router_dir, expected_teachers=teachers, device=device)
        except RouterFileError as exc:
            _fail(str(exc))
    matrices, notes = _all_matrices(router, teachers, ev, calib, normalisation, seed, mix_share, mix_weak, k)
    matrices["oracle"] = OracleRouter(teachers, ev.prompts, labels).scores(ev.prompts)
    results = compare(matrices, labels, teachers, quality=ev.values)

    if as_json:
        _print_json(results)
    else:
        _print_table(results, teachers, f"{len(ev)} prompts: {where}", normalisation, notes)


def _all_matrices(router, teachers, ev, calib, normalisation, seed, mix_share, mix_weak, k):
    """The router's scores of the evaluation prompts and every baseline's, with the notes."""
    with _err.status(f"embedding {len(ev)} prompts"):
        emb = router.embed(ev.prompts)
    matrices = {"router": router.scores(ev.prompts, embeddings=emb)}
    calib_emb = None
    if calib is not None:
        with _err.status(f"embedding {len(calib)} calibration prompts for kNN"):
            calib_emb = router.embed(calib.prompts)
    baselines, notes = baseline_matrices(
        teachers,
        calib,
        calib_emb,
        ev.prompts,
        emb,
        normalisation,
        seed=seed,
        mix_share=mix_share,
        mix_weak=mix_weak,
        knn_k=k,
    )
    matrices.update(baselines)
    return matrices, notes


def _unseen(cfg: dict, prompts) -> tuple[np.ndarray, str]:
    """Which prompts the router never saw in training, and how to describe them."""
    from persyn.router.model import prompt_hash

    seen = set(cfg.get("train", {}).get("seen_prompts", []))
    hashes = [prompt_hash(p) for p in prompts]
    unseen = np.array([h not in seen for h in hashes], dtype=bool)
    stored_test = set(cfg.get("split", {}).get("test_prompts", []))
    if stored_test and {h for h, u in zip(hashes, unseen, strict=True) if u} == stored_test:
        return unseen, "the router's held-out split of its training file"
    if unseen.all():
        return unseen, "the whole file (no prompt was seen in training)"
    return unseen, f"the file minus {int((~unseen).sum())} prompt(s) seen in training"


def _calibration_scores(calibration: Path | None, router_dir: Path, m, unseen: np.ndarray, teachers):
    """The scores the baselines fit on: --calibration, the router's own copy, or the seen rows."""
    calib = None
    if calibration is not None:
        calib = _load_scores(calibration)
    elif (router_dir / CALIBRATION_FILE).is_file():
        calib = _load_scores(router_dir / CALIBRATION_FILE)
    elif (~unseen).any():
        calib = m.subset(~unseen)
    if calib is not None:
        if sorted(calib.teachers) != sorted(teachers):
            _fail(f"calibration scores models {calib.teachers}, the router {teachers}")
        calib = calib.reorder(teachers)
    return calib


def _print_json(results: dict) -> None:
    from persyn.router.metrics import json_safe

    keys = (
        "hit@1",
        "hit@3",
        "regret",
        "mean_score",
        "oracle_gain_recovered",
        "mean_label",
        "n",
        "n_ranked",
        "allocation",
    )
    payload = {name: {k_: r.get(k_) for k_ in keys} for name, r in results.items()}
    sys.stdout.write(json.dumps(json_safe(payload), allow_nan=False) + "\n")


def _print_table(results: dict, teachers, title: str, normalisation: str, notes: list[str]) -> None:
    # One table, routers as columns: it stays readable however many models there are.
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    rows = [
        ("hit@1", "hit@1"),
        ("hit@3", "hit@3"),
        ("regret", "regret"),
        ("mean score", "mean_score"),
        ("gain recovered", "oracle_gain_recovered"),
    ]
    for label, key in rows:
        table.add_row(label, *(_fmt(r.get(key)) for r in results.values()))
    table.add_section()
    for t in teachers:
        table.add_row(f"n → {t}", *(str(r["allocation"][t]) for r in results.values()))
    console = Console()
    console.print(table)
    best = results["router"].get("best_single")
    console.print(
        f"n → model: prompts routed to it. Hit@k over {results['router']['n_ranked']} prompts whose "
        "models do not all tie; "
        f"regret in within-prompt {normalisation} units; best single model: {best}",
        highlight=False,
    )
    for note in notes:
        console.print(f"note: {note}", highlight=False)
