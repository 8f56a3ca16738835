"""The run store: one directory per run, one SQLite database in it, every result keyed by content.

Modules: `store` (`RunStore`: opening, prompts, subsets, events, state; the `results` and `routes`
tables are mixed into it), `schema` (SQL and connection settings), `records` (the row types and
`Prompt`: plain data), `keys` (the one digest behind every key), `manifest` (which config made a
run directory). Names are imported lazily, so `persyn.store.keys` and `persyn.store.records` stay
cheap leaves that any layer may import.
"""

from __future__ import annotations

from persyn.util.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".keys": ["canonical_json", "config_hash", "content_key", "digest", "make_gen_key"],
        ".manifest": ["ConfigMismatchError"],
        ".records": ["Event", "Prompt", "ResponseKey", "ResponseRow", "RouteSet", "ScoreRow", "StoreError"],
        ".routes": ["StoreEmbeddingCache"],
        ".evals": ["EvalValue"],
        ".store": ["RunDirBusyError", "RunStore"],
    },
)
