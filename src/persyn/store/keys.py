"""Content keys: every key and hash persyn keeps is made here, with one digest.

A stored row's key covers everything its value depends on (docs/store.md, "Keys"), so a changed
model, parameter or input gets a new key and nothing stale is ever reused:

    gk = make_gen_key(engine.fingerprint, params.key())      # a teacher configuration
    content_key("router", ids_digest, ...)                    # a scorer, a router, a route set
    digest("any text"), digest({"a": 1}), digest(file_chunks)  # the digest under all of them

Canonical JSON comes in two spellings, both frozen, because the keys of existing run directories
were made with them and the same content must keep its key (change either and every run directory
recomputes from scratch):
- compact (sorted keys, no spaces, UTF-8 kept): the store's keys (`content_key`, `config_hash`,
  `make_gen_key`);
- spaced (sorted keys, `json.dumps`' default separators, ASCII escapes): engine fingerprints,
  generation-parameter keys and the digests of id lists nested inside keys.

This module imports nothing of persyn: any layer may use it (the engines' fingerprints do).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["canonical_json", "config_hash", "content_key", "digest", "make_gen_key"]


def canonical_json(value: Any, *, spaced: bool = False) -> str:
    """`value` as canonical JSON (see the module docstring for the two spellings)."""
    if spaced:
        return json.dumps(value, sort_keys=True, default=str)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any, chars: int | None = 16, *, spaced: bool = False) -> str:
    """SHA-256 in hex, its first `chars` digits (None: all 64). Bytes and text are hashed as they
    are, an iterator of bytes chunk by chunk (a file's contents without holding them), anything
    else as canonical JSON."""
    h = hashlib.sha256()
    if isinstance(value, bytes | bytearray | memoryview):
        h.update(value)
    elif isinstance(value, str):
        h.update(value.encode("utf-8"))
    elif isinstance(value, Iterator):
        for chunk in value:
            h.update(chunk)
    else:
        h.update(canonical_json(value, spaced=spaced).encode("utf-8"))
    return h.hexdigest()[:chars]


#: Engine spec settings that change how fast a model runs, not what it writes: rows per forward
#: pass and the batch-invariant kernels (whose rows equal the plain kernels' up to float noise).
SPEED_ONLY_SPEC_KEYS = ("batch_size", "batch_invariant")


def without_speed_settings(value: Any) -> Any:
    """`value` (a config as plain data) without SPEED_ONLY_SPEC_KEYS in any engine spec (a mapping
    with `model` and `engine`): what a run's identity does not depend on."""
    if isinstance(value, Mapping):
        spec = "model" in value and "engine" in value
        return {
            k: without_speed_settings(v) for k, v in value.items() if not (spec and k in SPEED_ONLY_SPEC_KEYS)
        }
    if isinstance(value, list):
        return [without_speed_settings(v) for v in value]
    return value


def config_hash(config: Mapping[str, Any]) -> str:
    """The full digest of a config's canonical JSON: the manifest's identity of a config."""
    return digest(dict(config), None)


def content_key(*parts: Any) -> str:
    """16 hex digits over the canonical JSON of `parts`: for scorer, router and route keys, e.g.
    `content_key("learnability", student_fingerprint)`. Put in it everything that changes the
    value, and nothing that does not."""
    return digest(list(parts))


def make_gen_key(engine_fingerprint: str, params_key: str) -> str:
    """The key of one teacher configuration: its engine fingerprint plus `GenerationParams.key()`.
    Changing the model, template, dtype or any generation parameter gives a new key."""
    return content_key("gen", engine_fingerprint, params_key)
