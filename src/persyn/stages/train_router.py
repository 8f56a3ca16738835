"""Stage train-router (the method's steps 3-5, docs/method.md): combined labels -> Bradley-Terry
router, measured against every baseline by cross-validation over the calibration prompts.

1. Labels `r = (1 - alpha) * z(r_q) + alpha * z(r_l)` over the calibration matrices.
2. Metrics by k-fold cross-validation (`router.cv_folds`, default 5) over every calibration
   prompt: folds by a hash of seed and text; for each fold a router and the baselines (random,
   strongest, CAR, Mix, kNN, family-strong where families are declared; fitted by
   `persyn.router.baselines.build_baselines`, the function that picks the strategies' teachers too)
   are fitted on the other folds and score the fold's prompts. The pooled held-out score matrices
   are measured with `persyn.router.metrics.compare` against the oracle (Hit@1, Hit@3, regret, share of the
   oracle's gain recovered...), with 95% bootstrap intervals over prompts. With `cv_folds: 0`,
   one held-out split (`router.test_fraction`) instead, as before (k trainings cost k times one).
3. The router that routes is trained on every calibration prompt (with cross-validation always;
   with a held-out split when `router.refit`, the default; otherwise the measured one routes).

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

from persyn.config import RouterConfig
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
    gen_keys = ctx.gen_keys()
    scores = ctx.result("score")
    qk = sorted(set(scores.quality_keys(ctx.store.get_prompts(ids))))
    r = cfg.router.key_dict()
    # cv_folds changes only how the router is measured, not the router that routes; at its default
    # it stays out of the key, so routers trained before it existed are found again (their
    # metrics.json says how they were measured).
    if r.get("cv_folds") == RouterConfig.model_fields["cv_folds"].default:
        r.pop("cv_folds")
    # The scores themselves too, as the labels see them (filters, quality floor): a retried
    # generation or score that fills a gap, or a filter that drops a response, retrains the router.
    q, learn = scores.matrices(ids, gate=True)
    values = digest(np.nan_to_num(np.stack([q, learn]), nan=-1e30).round(6).tobytes())
    return content_key(
        "router",
        digest(ids, spaced=True),
        values,
        [gen_keys[t] for t in ctx.teachers],
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


def held_out_scores(
    router, teachers, texts, q, learn, labels, emb, fit, held, settings, own_embeddings
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Score matrices on the `held` prompts of `router` and of every baseline fitted on the `fit`
    prompts by `build_baselines` (the function the strategies use too), the oracle's labels, and
    the notes of baselines that could not be fitted. `own_embeddings`: the router embeds prompts
    itself (a fine-tuned encoder)."""
    from persyn.router.baselines import build_baselines

    f_idx, t_idx = np.flatnonzero(fit), np.flatnonzero(held)
    fitted = build_baselines(teachers, q[f_idx], learn[f_idx], labels[f_idx], emb[f_idx], **settings)
    t_texts = [texts[i] for i in t_idx]
    matrices = {}
    if router is not None:  # None: a fold whose router could not be trained
        matrices["router"] = router.scores(t_texts, embeddings=None if own_embeddings else emb[t_idx])
    for name, b in fitted.routers.items():
        matrices[name] = b.scores(t_texts, embeddings=emb[t_idx])
    matrices["oracle"] = np.where(np.isnan(labels[t_idx]), -np.inf, labels[t_idx])
    return matrices, fitted.notes


def measure(
    router,
    teachers,
    texts,
    q,
    learn,
    labels,
    emb,
    test: np.ndarray,
    settings: dict[str, Any],
    own_embeddings: bool,
    *,
    seed: int = 0,
) -> tuple[dict[str, Any], list[str]]:
    """The report's router table on one held-out split: `router` and every baseline (fitted outside
    `test`) scored on the `test` prompts against the oracle, with 95% bootstrap intervals; and the
    notes of baselines that could not be fitted."""
    from persyn.router.metrics import compare, json_safe

    mats, notes = held_out_scores(
        router, teachers, texts, q, learn, labels, emb, ~test, test, settings, own_embeddings
    )
    t = np.flatnonzero(test)
    metrics = compare(
        mats, labels[t], teachers, quality=q[t], learnability=learn[t], intervals=True, seed=seed
    )
    return json_safe(metrics), notes


def cross_validate(train, k: int, teachers, texts, q, learn, labels, emb, settings, own_embeddings, seed):
    """The report's router table by k-fold cross-validation: every calibration prompt is scored
    once, by a router (`train(mask, what)`) and baselines that never saw it; metrics and their
    bootstrap intervals are over all of them. Returns (metrics, notes)."""
    from persyn.router.metrics import compare, json_safe
    from persyn.router.model import cv_folds

    folds = cv_folds(texts, k, seed)
    pooled: dict[str, np.ndarray] = {}
    seen: dict[str, int] = {}
    notes: list[str] = []
    for f in range(k):
        held = folds == f
        try:
            fold_router, _ = train(~held, f"fold {f + 1}/{k}")
        except StageError as exc:  # too few prompts with a winner in this fold's training part
            notes.append(f"router left out of the metrics: {exc}")
            fold_router = None
        mats, fold_notes = held_out_scores(
            fold_router, teachers, texts, q, learn, labels, emb, ~held, held, settings, own_embeddings
        )
        notes += [n for n in fold_notes if n not in notes]
        for name, m in mats.items():
            pooled.setdefault(name, np.full((len(texts), len(teachers)), np.nan))[held] = m
            seen[name] = seen.get(name, 0) + 1
    for name in [n for n in pooled if seen[n] < k and n != "router"]:
        notes.append(
            f"baseline {name} left out of the metrics: it could be fitted in {seen[name]} of {k} folds"
        )
        del pooled[name]
    if seen.get("router", 0) < k:
        pooled.pop("router", None)
    metrics = compare(pooled, labels, teachers, quality=q, learnability=learn, intervals=True, seed=seed)
    return json_safe(metrics), notes


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
    texts = [p.text for p in ctx.store.get_prompts(ids)]
    q, learn, labels = _labels(ctx, ids)
    encoder = load_router_encoder(ctx)
    emb = embed_ids(ctx, ids, stage="train-router", encoder=encoder)
    train_cfg = _train_config(ctx)
    cache = ctx.store.embedding_cache()
    k = min(cfg.router.cv_folds, len(ids))
    cv = k >= 2
    test = np.zeros(len(ids), dtype=bool) if cv else holdout_mask(texts, cfg.router.test_fraction, cfg.seed)
    how = (
        f"{k}-fold cross-validation for metrics"
        if cv
        else f"{int((~test).sum())} train, {int(test.sum())} held out for metrics"
    )
    ctx.ui.say(f"[bold]train-router[/]: {len(ids)} calibration prompts ({how})")

    def train(mask: np.ndarray, what: str):
        return _train(ctx, np.flatnonzero(mask), what, texts, labels, encoder, train_cfg, cache, emb)

    data = (teachers, texts, q, learn, labels, emb)
    settings, own = cfg.baseline_settings(), train_cfg.finetune_encoder
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    if cv:
        metrics, notes = cross_validate(train, k, *data, settings, own, cfg.seed)
        evaluation = {"method": "cross-validation", "folds": k, "n_prompts": len(ids)}
        final, final_report = train(np.ones(len(ids), dtype=bool), "all prompts")
        report = final_report  # no single measured router: each fold had its own
    else:
        measured, report = train(~test, "measured")
        if test.any():
            metrics, notes = measure(measured, *data, test, settings, own, seed=cfg.seed)
        evaluation = {"method": "held-out split", "test_fraction": cfg.router.test_fraction}
        final, final_report = (
            train(np.ones(len(ids), dtype=bool), "all prompts")
            if cfg.router.refit and test.any()
            else (measured, report)
        )

    doc = {
        "train_key": key,
        "teachers": teachers,
        "n_calibration": len(ids),
        "n_test": len(ids) if cv else int(test.sum()),
        "evaluation": evaluation,
        "alpha": cfg.router.alpha,
        "train_report": final_report.to_dict(),
        "measured_report": report.to_dict(),
        "metrics": metrics,
        "notes": notes,
    }
    doc = _save(
        ctx, final, path, doc, refit=bool(cv or (cfg.router.refit and test.any())), folds=k if cv else 0
    )
    rm = metrics.get("router", {})
    msg = f"router {key} trained ({report.n_train_pairs} pairs)"
    if rm:
        where = f"{k}-fold CV" if cv else "held out"
        msg += f"; {where}: hit@1 {_fmt3(rm.get('hit@1'))}, regret {_fmt3(rm.get('regret'))}"
    ctx.store.log_event("train-router", "done", msg, key=key)
    ctx.ui.say(f"[dim]train-router[/] {msg}")
    return RouterResult(path, key, metrics, trained=True, doc=doc)


def _labels(ctx: RunContext, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quality, learnability and combined labels of the calibration prompts (StageError if unscored)."""
    scores = ctx.result("score")
    q, learn = scores.matrices(ids, gate=True)  # the baselines see junk responses as the labels do
    if np.isnan(q).all():
        raise StageError("no quality scores for the calibration prompts: run `persyn score CONFIG` first")
    if ctx.config.router.alpha > 0 and np.isnan(learn).all():
        raise StageError(
            "no learnability scores for the calibration prompts: run `persyn score CONFIG` first"
        )
    return q, learn, scores.labels(q, learn)


def _train(ctx: RunContext, sel, what: str, texts, labels, encoder, train_cfg, cache, emb):
    """A router trained on the calibration prompts `sel`, with a bar of epochs."""
    from persyn.router.model import train_router

    # Epochs, up to max_epochs: early stopping usually ends sooner, and the bar then jumps to the end.
    with ctx.ui.task(f"train-router · {what}", total=train_cfg.max_epochs) as advance:
        try:
            out = train_router(
                [texts[i] for i in sel],
                labels[sel],
                ctx.teachers,
                encoder=encoder,
                config=train_cfg,
                cache=cache,
                embeddings=None if train_cfg.finetune_encoder else emb[sel],
                progress=lambda info: advance(1),
            )
        except ValueError as exc:
            raise StageError(f"cannot train the router ({what}): {exc}") from exc
        advance(train_cfg.max_epochs - out[1].epochs)
        return out


def _save(
    ctx: RunContext, router, path: Path, doc: dict[str, Any], *, refit: bool, folds: int
) -> dict[str, Any]:
    """Write the router and its metrics.json into `path` (all or nothing); returns the document."""
    from persyn.router.io import save_router
    from persyn.router.metrics import json_safe

    extra = {
        "train_key": doc["train_key"],
        "calibration_prompts": doc["n_calibration"],
        "held_out": 0 if folds else doc["n_test"],
        "cv_folds": folds,
        "refit": refit,
    }
    with atomic_path(path) as tmp:  # the folder appears complete (weights and metrics) or not at all
        save_router(router, tmp, extra={"persyn": extra})
        ctx.write_artifact(f"{ROUTERS_DIR}/{tmp.name}/{METRICS_FILE}", json_safe(doc))
    if ctx.variant is None:  # another alpha's router never becomes the run's current one
        ctx.store.set_state("router", {"key": doc["train_key"], "path": str(path)})
    return json_safe(doc)


def _fmt3(v) -> str:
    return "-" if v is None else f"{v:.3f}"
