"""The PerSyn router (docs/method.md, Eq. 3): prompt encoder + coefficient head, Bradley-Terry loss.

`pi(x)` has one output per teacher; a pair "B beats A" on prompt x is trained with
`BCE(sigmoid(pi_B(x) - pi_A(x)), 1)`. With a frozen encoder (the default MiniLM) the embeddings are
computed once and only the small MLP head trains: 2,500 prompts x 8 teachers take seconds on a CPU.
With `finetune_encoder=True` the encoder (any HF model: the paper uses an LM backbone) trains end to
end with the head; that is meant for GPUs.

Training is deterministic for a seed: the validation split is a function of (seed, prompt text),
batches are drawn from a seeded generator, and torch's global RNG is restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from persyn.defaults import ROUTER
from persyn.router.base import Router
from persyn.router.encoders import (
    DEFAULT_ENCODER,
    EmbeddingCache,
    PromptEncoder,
    embed_prompts,
    load_encoder,
)
from persyn.scoring.labels import DEFAULT_ALPHA, Pairs, make_pairs
from persyn.store.keys import digest

ROUTER_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- deterministic splits


def prompt_hash(prompt: str) -> str:
    """A short stable id of a prompt's text (recorded in router files to rebuild splits)."""
    return digest(prompt)


def holdout_mask(prompts: Sequence[str], fraction: float, seed: int, salt: str = "test") -> np.ndarray:
    """Bool mask of the held-out prompts: the round(fraction * n) prompts with the smallest
    hash of (salt, seed, text). Independent of row order, so the same file and seed always give the
    same split, and a prompt's side never depends on which other prompts are present."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    n = len(prompts)
    mask = np.zeros(n, dtype=bool)
    k = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    if k == 0:
        return mask
    keys = [digest(f"{salt}:{seed}:{p}", None) for p in prompts]
    mask[np.argsort(keys, kind="stable")[:k]] = True
    return mask


# ----------------------------------------------------------------------------- the head


class CoefficientHead(nn.Module):
    """LayerNorm -> [Linear -> GELU -> Dropout] x layers -> Linear(n_teachers).

    The input LayerNorm lets one head work on unit-norm sentence embeddings and on raw LM hidden
    states (whose scale varies by orders of magnitude across models)."""

    def __init__(
        self, in_dim: int, n_teachers: int, hidden: int = 256, layers: int = 1, dropout: float = 0.1
    ):
        super().__init__()
        mods: list[nn.Module] = [nn.LayerNorm(in_dim)]
        d = in_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        mods.append(nn.Linear(d, n_teachers))
        self.net = nn.Sequential(*mods)
        self.shape = {
            "in_dim": in_dim,
            "n_teachers": n_teachers,
            "hidden": hidden,
            "layers": layers,
            "dropout": dropout,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ----------------------------------------------------------------------------- the router


class BTRouter(Router):
    """A trained router. `meta` holds what its JSON file records (alpha, normalisation, training)."""

    name = "router"

    def __init__(
        self,
        encoder: PromptEncoder,
        head: CoefficientHead,
        teachers: Sequence[str],
        meta: dict | None = None,
        cache: EmbeddingCache | None = None,
    ):
        if head.shape["n_teachers"] != len(teachers):
            raise ValueError(f"head has {head.shape['n_teachers']} outputs for {len(teachers)} teachers")
        if head.shape["in_dim"] != encoder.dim:
            raise ValueError(f"head expects {head.shape['in_dim']}-d inputs, encoder gives {encoder.dim}")
        self.encoder = encoder
        self.head = head.eval()
        self.teachers = list(teachers)
        self.meta = dict(meta or {})
        self.cache = cache

    def embed(self, prompts: Sequence[str], **kw) -> np.ndarray:
        return embed_prompts(self.encoder, prompts, self.cache, **kw)

    def scores(self, prompts: Sequence[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        self._check_embeddings(prompts, embeddings)
        emb = self.embed(prompts) if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        if emb.shape[1:] != (self.encoder.dim,):
            raise ValueError(f"embeddings have shape {emb.shape}, expected (n, {self.encoder.dim})")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(emb)).to(_head_device(self.head))
            return self.head(x).float().cpu().numpy().astype(np.float64)


def _head_device(head: nn.Module) -> torch.device:
    return next(head.parameters()).device


# ----------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """How the router trains. `alpha`/`normalisation` only record how the labels were made."""

    hidden: int = ROUTER.hidden
    layers: int = ROUTER.layers
    dropout: float = ROUTER.dropout
    lr: float = ROUTER.learning_rate
    weight_decay: float = ROUTER.weight_decay
    batch_prompts: int = ROUTER.batch_prompts
    max_epochs: int = ROUTER.max_epochs
    patience: int = ROUTER.patience
    val_fraction: float = ROUTER.val_fraction
    seed: int = 0
    finetune_encoder: bool = False
    encoder_lr: float = ROUTER.encoder_lr
    #: Stop after this many optimiser steps (end-to-end runs on a budget; tests).
    max_steps: int | None = None
    embed_batch_size: int = 64
    alpha: float = DEFAULT_ALPHA
    normalisation: str = ROUTER.normalisation

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 0 or self.batch_prompts < 1 or self.max_epochs < 1:
            raise ValueError("hidden, batch_prompts and max_epochs must be >= 1, layers >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainReport:
    n_prompts: int
    n_train_prompts: int
    n_val_prompts: int
    n_train_pairs: int
    n_val_pairs: int
    epochs: int
    steps: int
    best_epoch: int
    train_loss: float
    val_loss: float | None
    val_pair_accuracy: float | None
    embed_seconds: float
    train_seconds: float
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("history")
        return d


class _PairBatcher:
    """Pairs grouped by prompt (CSR), so a batch of prompts gathers its pairs without a Python loop."""

    def __init__(self, pairs: Pairs, n_prompts: int):
        order = np.argsort(pairs.prompt, kind="stable")
        self.a = pairs.a[order]
        self.b = pairs.b[order]
        self.y = pairs.b_wins[order]
        counts = np.bincount(pairs.prompt, minlength=n_prompts)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.counts = counts.astype(np.int64)

    def gather(self, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row in batch, a, b, y) for every pair of `prompts` (indices into the full set)."""
        lengths = self.counts[prompts]
        total = int(lengths.sum())
        row = np.repeat(np.arange(len(prompts)), lengths)
        # Index of each pair: its prompt's start plus its rank within that prompt.
        offset = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        idx = np.repeat(self.starts[prompts], lengths) + offset
        return row, self.a[idx], self.b[idx], self.y[idx]


def bt_loss(coef: torch.Tensor, row, a, b, y) -> torch.Tensor:
    """Mean over pairs of BCE(sigmoid(pi_b - pi_a), b_wins)."""
    dev = coef.device
    row, a, b = (torch.as_tensor(v, device=dev) for v in (row, a, b))
    logits = coef[row, b] - coef[row, a]
    return F.binary_cross_entropy_with_logits(logits, torch.as_tensor(y, device=dev, dtype=logits.dtype))


def train_router(
    prompts: Sequence[str],
    labels: np.ndarray,
    teachers: Sequence[str],
    *,
    encoder: PromptEncoder | str | None = None,
    config: TrainConfig | None = None,
    cache: EmbeddingCache | None = None,
    embeddings: np.ndarray | None = None,
    progress: Callable[[dict], None] | None = None,
) -> tuple[BTRouter, TrainReport]:
    """Train a router on calibration prompts and their combined labels.

    `labels` is n_prompts x n_teachers (scoring.labels.combine_labels; NaN = teacher absent).
    A `val_fraction` of the prompts (by seed and text) is held out for early stopping on the
    pairwise loss; the best epoch's weights are kept. `progress(info)` is called once per epoch.
    """
    cfg = config or TrainConfig()
    teachers = list(teachers)
    r = np.asarray(labels, dtype=np.float64)
    if r.shape != (len(prompts), len(teachers)):
        raise ValueError(f"labels have shape {r.shape}, expected ({len(prompts)}, {len(teachers)})")
    if len(set(teachers)) != len(teachers):
        raise ValueError(f"teacher names must be unique: {teachers}")
    encoder = _training_encoder(encoder, cfg)
    pairs = make_pairs(r)
    if len(pairs) == 0:
        raise ValueError("no training pairs: every prompt's teachers tie or lack scores")
    val = holdout_mask(prompts, cfg.val_fraction, cfg.seed, salt="val")
    has_pairs = np.bincount(pairs.prompt, minlength=len(prompts)) > 0
    train_idx = np.flatnonzero(~val & has_pairs)
    val_idx = np.flatnonzero(val & has_pairs)
    if train_idx.size == 0:
        raise ValueError("no training prompt has a pair; lower val_fraction or add prompts")
    batcher = _PairBatcher(pairs, len(prompts))

    t0 = time.perf_counter()
    emb_t: torch.Tensor | None = None
    if not cfg.finetune_encoder:
        if embeddings is None:
            embeddings = embed_prompts(encoder, prompts, cache, batch_size=cfg.embed_batch_size)
        elif embeddings.shape != (len(prompts), encoder.dim):
            raise ValueError(
                f"embeddings have shape {embeddings.shape}, expected ({len(prompts)}, {encoder.dim})"
            )
        emb_t = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    embed_seconds = time.perf_counter() - t0

    rng = np.random.default_rng(cfg.seed)
    t1 = time.perf_counter()
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]), _threads(1 if not cfg.finetune_encoder else threads):
        torch.manual_seed(cfg.seed)
        fit = _Fit(encoder, len(teachers), cfg, prompts, emb_t, val_idx, batcher.gather(val_idx))
        fit.train(train_idx, batcher, rng, progress)
    if cfg.finetune_encoder:
        encoder.module.eval()
        encoder.finetuned_digest = weights_digest(encoder.module)

    report = fit.report(len(prompts), train_idx, batcher, embed_seconds, time.perf_counter() - t1)
    meta = {
        "alpha": cfg.alpha,
        "normalisation": cfg.normalisation,
        "train": {
            "config": asdict(cfg),
            "report": report.to_dict(),
            # Every prompt the router saw (train + validation): evaluation excludes these.
            "seen_prompts": sorted(prompt_hash(p) for p in prompts),
        },
    }
    return BTRouter(encoder, fit.head, teachers, meta=meta, cache=cache), report


def _training_encoder(encoder: PromptEncoder | str | None, cfg: TrainConfig) -> PromptEncoder:
    if encoder is None or isinstance(encoder, str):
        encoder = load_encoder(encoder or DEFAULT_ENCODER)
    if cfg.finetune_encoder:
        # Never mutate the shared (memoised) frozen encoder. Train float32 weights: in bf16 (what
        # `dtype: auto` loads on some CPUs) AdamW's small updates round away.
        encoder = copy.deepcopy(encoder)
        encoder.module.float()
    return encoder


class _Fit:
    """One training run of the coefficient head (and the encoder, when fine-tuned): the model and
    optimiser, the epoch loop with early stopping on the validation pairs, and the best state."""

    def __init__(self, encoder, n_teachers: int, cfg: TrainConfig, prompts, emb_t, val_idx, val_pairs):
        self.encoder, self.cfg, self.prompts = encoder, cfg, prompts
        self.val_idx, self.val_pairs = val_idx, val_pairs
        self.head = CoefficientHead(encoder.dim, n_teachers, cfg.hidden, cfg.layers, cfg.dropout)
        self.device = encoder.device if cfg.finetune_encoder else torch.device("cpu")
        self.head.to(self.device)
        self.emb_t = emb_t.to(self.device) if emb_t is not None else None
        groups = [{"params": self.head.parameters(), "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
        if cfg.finetune_encoder:
            encoder.module.train()
            groups.append({"params": encoder.module.parameters(), "lr": cfg.encoder_lr, "weight_decay": 0.0})
        self.opt = torch.optim.AdamW(groups)
        self.best: tuple = (math.inf, 0, None, None)  # (val loss, epoch, accuracy, state)
        self.history: list[dict] = []
        self.steps = 0
        self.epoch = 0
        self.train_loss = math.nan

    def coefficients(self, idx: np.ndarray, train: bool) -> torch.Tensor:
        if self.emb_t is not None:
            return self.head(self.emb_t[torch.as_tensor(idx, device=self.device)])
        texts = [self.prompts[i] for i in idx]
        if train:
            return self.head(self.encoder.forward(texts))
        size = self.cfg.embed_batch_size
        with torch.no_grad():  # frozen-in-eval: batch to bound memory on big encoders
            chunks = [self.encoder.forward(texts[s : s + size]) for s in range(0, len(texts), size)]
            return self.head(torch.cat(chunks))

    def _mode(self, train: bool) -> None:
        self.head.train(train)
        if self.cfg.finetune_encoder:
            self.encoder.module.train(train)

    def evaluate(self) -> tuple[float, float] | None:
        """(validation loss, pair accuracy), or None without validation pairs."""
        if len(self.val_pairs[0]) == 0:
            return None
        self._mode(False)
        with torch.no_grad():
            coef = self.coefficients(self.val_idx, train=False)
            loss = float(bt_loss(coef, *self.val_pairs))
            row, a, b, y = self.val_pairs
            rows = torch.as_tensor(row)
            diff = (coef[rows, torch.as_tensor(b)] - coef[rows, torch.as_tensor(a)]).cpu().numpy()
            acc = float(np.mean((diff > 0) == (y > 0.5)))
        self._mode(True)
        return loss, acc

    def snapshot(self) -> dict:
        state = {"head": {k: v.detach().clone() for k, v in self.head.state_dict().items()}}
        if self.cfg.finetune_encoder:
            state["encoder"] = {k: v.detach().clone() for k, v in self.encoder.module.state_dict().items()}
        return state

    def _epoch(self, train_idx: np.ndarray, batcher: _PairBatcher, rng: np.random.Generator) -> None:
        cfg = self.cfg
        perm = train_idx[rng.permutation(train_idx.size)]
        losses = []
        for s in range(0, perm.size, cfg.batch_prompts):
            batch = perm[s : s + cfg.batch_prompts]
            row, a, b, y = batcher.gather(batch)
            loss = bt_loss(self.coefficients(batch, train=True), row, a, b, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
            self.steps += 1
            if cfg.max_steps is not None and self.steps >= cfg.max_steps:
                break
        self.train_loss = float(np.mean(losses))

    def train(self, train_idx, batcher: _PairBatcher, rng, progress: Callable[[dict], None] | None) -> None:
        """Epochs until `max_epochs`, `max_steps` or `patience` epochs without a better validation
        loss; then the best epoch's weights are restored."""
        cfg = self.cfg
        self.head.train()
        while self.epoch < cfg.max_epochs:
            self.epoch += 1
            self._epoch(train_idx, batcher, rng)
            ev = self.evaluate()
            info = {
                "epoch": self.epoch,
                "steps": self.steps,
                "train_loss": self.train_loss,
                "val_loss": ev[0] if ev else None,
                "val_pair_accuracy": ev[1] if ev else None,
            }
            self.history.append(info)
            if progress is not None:
                progress(info)
            if ev is not None and ev[0] < self.best[0] - 1e-6:
                self.best = (ev[0], self.epoch, ev[1], self.snapshot())
            stop_budget = cfg.max_steps is not None and self.steps >= cfg.max_steps
            if stop_budget or (ev is not None and self.epoch - self.best[1] >= cfg.patience):
                break
        if self.best[3] is not None:
            self.head.load_state_dict(self.best[3]["head"])
            if cfg.finetune_encoder:
                self.encoder.module.load_state_dict(self.best[3]["encoder"])
        self.head.eval()

    def report(self, n_prompts: int, train_idx, batcher: _PairBatcher, embed_s: float, train_s: float):
        best_loss, best_epoch, best_acc, state = self.best
        return TrainReport(
            n_prompts=n_prompts,
            n_train_prompts=int(train_idx.size),
            n_val_prompts=int(self.val_idx.size),
            n_train_pairs=int(batcher.counts[train_idx].sum()),
            n_val_pairs=int(len(self.val_pairs[0])),
            epochs=self.epoch,
            steps=self.steps,
            best_epoch=best_epoch if state is not None else self.epoch,
            train_loss=self.train_loss,
            val_loss=None if state is None else float(best_loss),
            val_pair_accuracy=best_acc,
            embed_seconds=embed_s,
            train_seconds=train_s,
            history=self.history,
        )


@contextlib.contextmanager
def _threads(n: int):
    """Run with `n` torch threads. The frozen-encoder head is a tiny MLP: its ops take microseconds,
    and intra-op threads only add synchronisation (10x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def weights_digest(module: nn.Module) -> str:
    """A digest of a module's weights (names, shapes and bytes)."""
    items = sorted(module.state_dict().items())
    return digest(
        part
        for name, t in items
        for part in (
            name.encode(),
            str(tuple(t.shape)).encode(),
            t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(),
        )
    )
