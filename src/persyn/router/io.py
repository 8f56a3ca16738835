"""Save and load routers: safetensors weights + one JSON file. Never pickle.

A router directory holds
- ``router.json``: format version, teacher names in column order, encoder (name, kind, pooling,
  max length, dim, fine-tuned or not), alpha, normalisation, head shape, training record
  (config, report, hashes of every prompt it saw), plus whatever `extra` the caller adds;
- ``head.safetensors``: the coefficient head;
- ``encoder/``: only when the encoder was fine-tuned (its own safetensors + tokenizer).
Loading checks the teacher list against the one the caller expects and refuses a mismatch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from persyn.router.encoders import EmbeddingCache, load_encoder
from persyn.router.model import ROUTER_FORMAT_VERSION, BTRouter, CoefficientHead
from persyn.util.atomic import write_json
from persyn.util.errors import PersynError

ROUTER_JSON = "router.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"


class RouterFileError(PersynError, ValueError):
    """A router directory is missing, malformed or of another version."""


class TeacherMismatchError(RouterFileError):
    """The router was trained for another list of teachers."""


def router_config(router: BTRouter, extra: dict | None = None) -> dict:
    enc = router.encoder
    return {
        "format": "persyn-router",
        "version": ROUTER_FORMAT_VERSION,
        "teachers": list(router.teachers),
        "encoder": {
            "name": enc.name,
            "kind": enc.kind,
            "pooling": enc.pooling,
            "max_length": enc.max_length,
            "dim": enc.dim,
            "finetuned": enc.finetuned_digest is not None,
            "finetuned_digest": enc.finetuned_digest,
        },
        "alpha": router.meta.get("alpha"),
        "normalisation": router.meta.get("normalisation"),
        "head": dict(router.head.shape),
        "train": router.meta.get("train", {}),
        **(extra or {}),
    }


def save_router(router: BTRouter, path: str | Path, *, extra: dict | None = None) -> Path:
    """Write `router` into directory `path` (created if needed). Returns the directory."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**router.meta, **(extra or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in router.head.state_dict().items()}
    save_file(state, str(out / HEAD_FILE), metadata={"format": "persyn-router-head"})
    if router.encoder.finetuned_digest is not None:
        router.encoder.save(out / ENCODER_DIR)
    config = router_config(
        router, {k: v for k, v in meta.items() if k not in ("alpha", "normalisation", "train")}
    )
    # The JSON goes last: a directory without it is not a router, so a crash mid-save is visible.
    write_json(out / ROUTER_JSON, config, allow_nan=False)
    router.meta = meta
    return out


def read_router_config(path: str | Path) -> dict:
    p = Path(path)
    cfg_path = p / ROUTER_JSON
    if not cfg_path.is_file():
        raise RouterFileError(f"{p}: not a router directory (no {ROUTER_JSON})")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RouterFileError(f"{cfg_path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if cfg.get("format") != "persyn-router":
        raise RouterFileError(f"{cfg_path}: not a persyn router file")
    if cfg.get("version") != ROUTER_FORMAT_VERSION:
        raise RouterFileError(
            f"{cfg_path}: router format version {cfg.get('version')} "
            f"(this persyn reads {ROUTER_FORMAT_VERSION})"
        )
    for key in ("teachers", "encoder", "head"):
        if key not in cfg:
            raise RouterFileError(f"{cfg_path}: missing key {key!r}")
    return cfg


def check_teachers(found: Sequence[str], expected: Sequence[str], where: str) -> None:
    if list(found) != list(expected):
        raise TeacherMismatchError(
            f"{where}: router was trained for teachers {list(found)} but the expected teachers are "
            f"{list(expected)} (same names, same order); retrain the router for this teacher pool"
        )


def load_router(
    path: str | Path,
    *,
    expected_teachers: Sequence[str] | None = None,
    device: str = "cpu",
    cache: EmbeddingCache | None = None,
    dtype: str = "auto",
) -> BTRouter:
    """Load a router directory written by `save_router`.

    With `expected_teachers`, refuse a router whose teacher list differs (names or order).
    `dtype`: the encoder's (`auto`: the machine's rule, persyn.util.hardware).
    """
    p = Path(path)
    cfg = read_router_config(p)
    if expected_teachers is not None:
        check_teachers(cfg["teachers"], expected_teachers, str(p))
    enc_cfg = cfg["encoder"]
    if enc_cfg.get("finetuned"):
        weights = p / ENCODER_DIR
        if not weights.is_dir():
            raise RouterFileError(f"{p}: fine-tuned router without its {ENCODER_DIR}/ folder")
        pooling = "auto" if enc_cfg["kind"] == "sentence-transformers" else enc_cfg["pooling"]
        encoder = load_encoder(
            enc_cfg["name"],
            pooling=pooling,
            max_length=enc_cfg["max_length"],
            device=device,
            path=str(weights),
            dtype=dtype,
        )
        encoder.finetuned_digest = enc_cfg.get("finetuned_digest")
    else:
        pooling = "auto" if enc_cfg["kind"] == "sentence-transformers" else enc_cfg["pooling"]
        encoder = load_encoder(
            enc_cfg["name"], pooling=pooling, max_length=enc_cfg["max_length"], device=device, dtype=dtype
        )
    if encoder.dim != enc_cfg["dim"]:
        raise RouterFileError(
            f"{p}: encoder {enc_cfg['name']} gives {encoder.dim}-d vectors, file says {enc_cfg['dim']}"
        )
    shape = cfg["head"]
    head = CoefficientHead(
        shape["in_dim"], shape["n_teachers"], shape["hidden"], shape["layers"], shape["dropout"]
    )
    try:
        head.load_state_dict(load_file(str(p / HEAD_FILE)))
    except (FileNotFoundError, RuntimeError) as exc:
        raise RouterFileError(f"{p / HEAD_FILE}: cannot load head weights: {exc}") from exc
    head.to(torch.device(device)).eval()
    meta = {k: v for k, v in cfg.items() if k not in ("format", "version", "teachers", "encoder", "head")}
    return BTRouter(encoder, head, cfg["teachers"], meta=meta, cache=cache)
