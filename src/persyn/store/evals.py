"""The eval table of the run store: the student's answers to held-out prompts and their scores,
so that `persyn eval` and `persyn compare` resume and never generate or judge an item twice.
A part of `RunStore` (store.py builds the class from these tables).

    store.put_eval_rows(key, {"item-1": EvalValue(text="The answer is 4.", value=12.0)})
    store.get_eval_rows(key, ["item-1", "item-2"])      # {"item-1": EvalValue(...)}: what is there

`key` is the caller's content key of what was measured (model, metric, settings); a row is final.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from persyn.store.schema import chunks, dumps, loads, marks

__all__ = ["EvalTables", "EvalValue"]


@dataclass(frozen=True)
class EvalValue:
    value: float | None = None
    text: str | None = None
    meta: dict[str, Any] | None = None


class EvalTables:
    """The eval rows; mixed into `RunStore`, whose `_read`, `_conn` and `transaction` it uses."""

    def put_eval_rows(self, key: str, values: Mapping[str, EvalValue]) -> int:
        """Write one batch of rows of `key` in one transaction; a stored row is kept as it is."""
        now = time.time()
        params = [(key, item, v.value, v.text, dumps(v.meta), now) for item, v in values.items()]
        if not params:
            return 0
        with self.transaction():
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO eval_rows(key, item, value, text, meta, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                params,
            )
            return self._conn.total_changes - before

    def get_eval_rows(self, key: str, items: Sequence[str]) -> dict[str, EvalValue]:
        """The stored rows of `key` among `items`."""
        out: dict[str, EvalValue] = {}
        try:
            for part in chunks(list(items)):
                sql = "SELECT item, value, text, meta FROM eval_rows WHERE key = ? AND item IN "
                rows = self._read(f"{sql}({marks(len(part))})", (key, *part))
                for item, value, text, meta in rows:
                    out[item] = EvalValue(value, text, loads(meta))
        except sqlite3.OperationalError as e:
            # A run directory from before the student's side, opened read-only: no table, no rows.
            if "no such table" not in str(e):
                raise
        return out
