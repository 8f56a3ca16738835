"""The run store: one directory per run, one SQLite database in it, every result keyed by content.

Modules: `store` (`RunStore`: opening, prompts, subsets, events, state; the `results` and `routes`
tables are mixed into it), `schema` (SQL and connection settings), `records` (the row types and
`Prompt`: plain data), `keys` (the one digest behind every key), `manifest` (which config made a
run directory). Names are imported lazily, so `persyn.store.keys` and `persyn.store.records` stay
cheap leaves that any layer may import.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "canonical_json": "keys",
    "config_hash": "keys",
    "content_key": "keys",
    "digest": "keys",
    "make_gen_key": "keys",
    "ConfigMismatchError": "manifest",
    "Event": "records",
    "Prompt": "records",
    "ResponseKey": "records",
    "ResponseRow": "records",
    "RouteSet": "records",
    "ScoreRow": "records",
    "StoreError": "records",
    "StoreEmbeddingCache": "routes",
    "RunDirBusyError": "store",
    "RunStore": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persyn.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f"persyn.store.{module}"), name)


def __dir__() -> list[str]:
    return __all__
