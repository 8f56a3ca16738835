"""Stage train-router (the method's steps 3-5, docs/method.md): combined labels -> Bradley-Terry
router, measured against every baseline on held-out calibration prompts.

1. Labels `r = (1 - alpha) * z(r_q) + alpha * z(r_l)` over the calibration matrices.
2. `router.test_fraction` of the calibration prompts (a hash of seed and text) are held out. A
   router trained on the rest, and the baselines fitted on the rest by
   `persyn.router.baselines.build_baselines` (random, strongest, CAR, Mix, family-strong where
   families are declared, kNN: the same function that picks the strategies' teachers), are scored
   on the held-out prompts with
   `persyn.router.metrics.compare` against the oracle (Hit@1, Hit@3, regret, share of the
   oracle's gain recovered...).
3. With `router.refit` (default) the router that routes is then trained on every calibration
   prompt; otherwise the measured one routes.

The router is saved as safetensors + JSON under `<run>/routers/<train key>/` with `metrics.json`
beside it. The train key covers everything the router depends on (the calibration responses' keys,
the quality and learnability scorer keys, alpha, the router settings, the seed), so re-running
reuses a finished router, and a new student (new learnability key) trains a new one.
`result(ctx)` is the router of the current config (its folder and metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persyn.stages.context import METRICS_FILE, ROUTERS_DIR, RunContext, StageError
from persyn.stages.embeddings import embed_ids, load_router_encoder
from persyn.store.keys import content_key, digest
from persyn.util.atomic import atomic_path


@dataclass
class RouterResult:
    path: Path
    train_key: str
    metrics: dict[str, dict[str, Any]]  # "router" and each baseline -> metrics
    trained: bool  # False when a finished router was reused
    doc: dict[str, Any] = field(default_factory=dict)  # all of metrics.json (notes, held-out size...)

    @property
    def router_metrics(self) -> dict[str, Any]:
        return self.metrics.get("router", {})


def train_key(ctx: RunContext, ids: list[str]) -> str:
    cfg = ctx.config
    gks = ctx.gen_keys()
    scores = ctx.result("score")
    qk = sorted(set(scores.quality_keys(ctx.store.get_prompts(ids))))
    r = cfg.router.model_dump(mode="json")
    # The scores themselves too: a retried generation or score that fills a gap retrains the router.
    q, lm = scores.matrices(ids)
    values = digest(np.nan_to_num(np.stack([q, lm]), nan=-1e30).round(6).tobytes())
    return content_key(
        "router",
        digest(ids, spaced=True),
        values,
        [gks[t] for t in ctx.teachers],
        qk,
        scores.learnability_key() if cfg.router.alpha > 0 else None,
        r,
        cfg.baselines.model_dump(mode="json"),
        cfg.seed,
    )


def _trained(ctx: RunContext, key: str) -> RouterResult | None:
    path = ctx.path(ROUTERS_DIR, key)
    doc = ctx.artifact(f"{ROUTERS_DIR}/{key}/{METRICS_FILE}")
    if not (path / "router.json").is_file() or doc is None:
        return None
    return RouterResult(path, key, doc["metrics"], trained=False, doc=doc)


def result(ctx: RunContext) -> RouterResult:
    """The router of the current config, or a StageError saying what to run."""
    done = _trained(ctx, train_key(ctx, ctx.calibration_ids()))
    if done is None:
        raise StageError("no router for this config yet: run `persyn train-router CONFIG` first")
    return done


def _train_config(ctx: RunContext):
    from persyn.router.model import TrainConfig

    r = ctx.config.router
    return TrainConfig(
        hidden=r.hidden,
        layers=r.layers,
        dropout=r.dropout,
        lr=r.learning_rate,
        weight_decay=r.weight_decay,
        batch_prompts=r.batch_prompts,
        max_epochs=r.max_epochs,
        patience=r.patience,
        val_fraction=r.val_fraction,
        seed=ctx.config.seed,
        finetune_encoder=r.fine_tune,
        encoder_lr=r.encoder_lr,
        alpha=r.alpha,
        normalisation=r.normalisation,
    )


def measure(
    router,
    teachers,
    texts,
    q,
    lm,
    labels,
    emb,
    test: np.ndarray,
    settings: dict[str, Any],
    own_embeddings: bool,
) -> tuple[dict[str, Any], list[str]]:
    """The report's router table: `router` and every baseline (fitted on the calibration prompts
    outside `test` by `build_baselines`, the function the strategies use too) scored on the `test`
    prompts against the oracle; and the notes of baselines that could not be fitted.
    `own_embeddings`: the router embeds prompts itself (a fine-tuned encoder)."""
    from persyn.router.baselines import build_baselines
    from persyn.router.metrics import compare, json_safe

    t_idx, f_idx = np.flatnonzero(test), np.flatnonzero(~test)
    fitted = build_baselines(teachers, q[f_idx], lm[f_idx], labels[f_idx], emb[f_idx], **settings)
    t_texts = [texts[i] for i in t_idx]
    matrices = {"router": router.scores(t_texts, embeddings=None if own_embeddings else emb[t_idx])}
    for name, b in fitted.routers.items():
        matrices[name] = b.scores(t_texts, embeddings=emb[t_idx])
    matrices["oracle"] = np.where(np.isnan(labels[t_idx]), -np.inf, labels[t_idx])
    metrics = compare(matrices, labels[t_idx], teachers, quality=q[t_idx], learnability=lm[t_idx])
    return json_safe(metrics), fitted.notes


def run(ctx: RunContext) -> RouterResult:
    from persyn.router.model import holdout_mask

    cfg = ctx.config
    ids = ctx.calibration_ids()
    key = train_key(ctx, ids)
    path = ctx.path(ROUTERS_DIR, key)
    done = _trained(ctx, key)
    if done is not None:
        ctx.store.log_event("train-router", "resume", f"router {key} already trained", key=key)
        ctx.ui.say(f"[dim]train-router[/] router {key}: done earlier")
        if ctx.variant is None:
            ctx.store.set_state("router", {"key": key, "path": str(path)})
        return done

    teachers = ctx.teachers
    prompts = ctx.store.get_prompts(ids)
    texts = [p.text for p in prompts]
    q, lm, labels = _labels(ctx, ids)
    encoder = load_router_encoder(ctx)
    emb = embed_ids(ctx, ids, stage="train-router", encoder=encoder)
    test = holdout_mask(texts, cfg.router.test_fraction, cfg.seed, salt="test")
    fit = ~test
    tcfg = _train_config(ctx)
    cache = ctx.store.embedding_cache()
    ctx.ui.say(
        f"[bold]train-router[/]: {len(ids)} calibration prompts ({int(fit.sum())} train, "
        f"{int(test.sum())} held out for metrics)"
    )

    def train(mask: np.ndarray, what: str):
        return _train(ctx, np.flatnonzero(mask), what, texts, labels, encoder, tcfg, cache, emb)

    metrics: dict[str, Any] = {}
    notes: list[str] = []
    measured, report = train(fit, "measured")
    if test.any():
        metrics, notes = measure(
            measured,
            teachers,
            texts,
            q,
            lm,
            labels,
            emb,
            test,
            cfg.baseline_settings(),
            tcfg.finetune_encoder,
        )
    final, final_report = (
        train(np.ones(len(ids), dtype=bool), "all prompts")
        if cfg.router.refit and test.any()
        else (measured, report)
    )

    doc = {
        "train_key": key,
        "teachers": teachers,
        "n_calibration": len(ids),
        "n_test": int(test.sum()),
        "alpha": cfg.router.alpha,
        "train_report": final_report.to_dict(),
        "measured_report": report.to_dict(),
        "metrics": metrics,
        "notes": notes,
    }
    doc = _save(ctx, final, path, doc, refit=bool(cfg.router.refit and test.any()))
    rm = metrics.get("router", {})
    msg = f"router {key} trained ({report.n_train_pairs} pairs)"
    if rm:
        msg += f"; held out: hit@1 {_f(rm.get('hit@1'))}, regret {_f(rm.get('regret'))}"
    ctx.store.log_event("train-router", "done", msg, key=key)
    ctx.ui.say(f"[dim]train-router[/] {msg}")
    return RouterResult(path, key, metrics, trained=True, doc=doc)


def _labels(ctx: RunContext, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quality, learnability and combined labels of the calibration prompts (StageError if unscored)."""
    scores = ctx.result("score")
    q, lm = scores.matrices(ids)
    if np.isnan(q).all():
        raise StageError("no quality scores for the calibration prompts: run `persyn score CONFIG` first")
    if ctx.config.router.alpha > 0 and np.isnan(lm).all():
        raise StageError(
            "no learnability scores for the calibration prompts: run `persyn score CONFIG` first"
        )
    return q, lm, scores.labels(q, lm)


def _train(ctx: RunContext, sel, what: str, texts, labels, encoder, tcfg, cache, emb):
    """A router trained on the calibration prompts `sel`, with a bar of epochs."""
    from persyn.router.model import train_router

    # Epochs, up to max_epochs: early stopping usually ends sooner, and the bar then jumps to the end.
    with ctx.ui.task(f"train-router · {what}", total=tcfg.max_epochs) as advance:
        try:
            out = train_router(
                [texts[i] for i in sel],
                labels[sel],
                ctx.teachers,
                encoder=encoder,
                config=tcfg,
                cache=cache,
                embeddings=None if tcfg.finetune_encoder else emb[sel],
                progress=lambda info: advance(1),
            )
        except ValueError as exc:
            raise StageError(f"cannot train the router ({what}): {exc}") from exc
        advance(tcfg.max_epochs - out[1].epochs)
        return out


def _save(ctx: RunContext, router, path: Path, doc: dict[str, Any], *, refit: bool) -> dict[str, Any]:
    """Write the router and its metrics.json into `path` (all or nothing); returns the document."""
    from persyn.router.io import save_router
    from persyn.router.metrics import json_safe

    extra = {
        "train_key": doc["train_key"],
        "calibration_prompts": doc["n_calibration"],
        "held_out": doc["n_test"],
        "refit": refit,
    }
    with atomic_path(path) as tmp:  # the folder appears complete (weights and metrics) or not at all
        save_router(router, tmp, extra={"persyn": extra})
        ctx.write_artifact(f"{ROUTERS_DIR}/{tmp.name}/{METRICS_FILE}", json_safe(doc))
    if ctx.variant is None:  # another alpha's router never becomes the run's current one
        ctx.store.set_state("router", {"key": doc["train_key"], "path": str(path)})
    return json_safe(doc)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"
