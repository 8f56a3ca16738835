"""The routes and embeddings tables of the run store: the teacher each prompt is routed to (with
the router's scores), and cached prompt embeddings. A part of `RunStore` (see store.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from persyn.store.records import RouteSet, StoreError
from persyn.store.schema import chunks, dumps, loads, marks


class RouteTables:
    """Routes and embeddings; mixed into `RunStore`, whose `_read`, `_write_many`, `_conn` and
    `transaction` it uses."""

    # ------------------------------------------------------------------ routes

    def put_routes(
        self,
        router_key: str,
        teacher_names: Sequence[str],
        prompt_ids: Sequence[str],
        assigned: Sequence[str],
        scores: np.ndarray | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Record routes (one transaction). `router_key` must cover the router weights and the
        routing caps/budget: a stored route is final, later writes of the same key are ignored.
        `scores`: optional n x len(teacher_names) matrix kept as float32 per row. Returns rows added."""
        names = list(teacher_names)
        n = len(prompt_ids)
        if len(assigned) != n:
            raise StoreError(f"{n} prompt ids but {len(assigned)} assigned teachers")
        unknown = sorted(set(assigned) - set(names))
        if unknown:
            raise StoreError(f"routes assign unknown teacher(s) {unknown}; teachers are {names}")
        blobs: list[bytes | None] = [None] * n
        if scores is not None:
            s = np.asarray(scores, dtype=np.float32)
            if s.shape != (n, len(names)):
                raise StoreError(f"scores shape {s.shape}, expected {(n, len(names))}")
            blobs = [row.tobytes() for row in s]
        with self.transaction():
            row = self._conn.execute(
                "SELECT teachers FROM route_sets WHERE router_key = ?", (router_key,)
            ).fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO route_sets(router_key, teachers, meta, created_at) VALUES (?, ?, ?, ?)",
                    (router_key, json.dumps(names), dumps(dict(meta) if meta else None), time.time()),
                )
            elif json.loads(row[0]) != names:
                raise StoreError(
                    f"router {router_key!r} was stored with teachers {json.loads(row[0])}, not {names}"
                )
            return self._write_many(
                "INSERT INTO routes(router_key, prompt_id, teacher, scores) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(router_key, prompt_id) DO NOTHING",
                [(router_key, p, a, b) for p, a, b in zip(prompt_ids, assigned, blobs, strict=True)],
            )

    def get_routes(self, router_key: str, prompt_ids: Sequence[str] | None = None) -> RouteSet | None:
        """Stored routes of one router, for `prompt_ids` (those routed, in that order) or for all
        routed prompts in prompt load order. None if the router has no routes."""
        head = self._read("SELECT teachers, meta FROM route_sets WHERE router_key = ?", (router_key,))
        if not head:
            return None
        names = json.loads(head[0][0])
        if prompt_ids is None:
            rows = self._read(
                "SELECT r.prompt_id, r.teacher, r.scores FROM routes r "
                "LEFT JOIN prompts p ON p.id = r.prompt_id WHERE r.router_key = ? "
                "ORDER BY p.seq, r.prompt_id",
                (router_key,),
            )
        else:
            found = {}
            for chunk in chunks(list(dict.fromkeys(prompt_ids))):
                for r in self._read(
                    f"SELECT prompt_id, teacher, scores FROM routes WHERE router_key = ? "
                    f"AND prompt_id IN ({marks(len(chunk))})",
                    (router_key, *chunk),
                ):
                    found[r[0]] = r
            rows = [found[p] for p in prompt_ids if p in found]
        scores = None
        if rows and all(r[2] is not None for r in rows):
            scores = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(
                len(rows), len(names)
            )
        return RouteSet(
            router_key, names, [r[0] for r in rows], [r[1] for r in rows], scores, loads(head[0][1]) or {}
        )

    def route_keys(self) -> list[str]:
        return [r[0] for r in self._read("SELECT router_key FROM route_sets ORDER BY created_at")]

    # ------------------------------------------------------------------ embeddings

    def embedding_cache(self, namespace: str = "") -> StoreEmbeddingCache:
        """A cache for prompt embeddings backed by this store, matching
        `persyn.router.encoders.EmbeddingCache` (`get(keys)`, `put({key: vector})`). The router
        builds keys from the encoder key and a hash of the text, so one namespace serves all
        encoders; pass a namespace to keep other kinds of vectors apart."""
        return StoreEmbeddingCache(self, namespace)


class StoreEmbeddingCache:
    """Float32 vectors by key in the run store; see `RunStore.embedding_cache`."""

    def __init__(self, store: RouteTables, namespace: str = ""):
        self.store = store
        self.namespace = namespace

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys` (missing keys are simply absent)."""
        out: dict[str, np.ndarray] = {}
        for chunk in chunks(list(dict.fromkeys(keys))):
            for key, dim, blob in self.store._read(
                f"SELECT key, dim, vec FROM embeddings WHERE namespace = ? AND key IN ({marks(len(chunk))})",
                (self.namespace, *chunk),
            ):
                vec = np.frombuffer(blob, dtype=np.float32)
                if vec.shape != (dim,):
                    raise StoreError(f"embedding {key!r} is corrupt ({vec.size} values, expected {dim})")
                out[key] = vec.copy()  # writable, independent of the row buffer
        return out

    def put(self, items: Mapping[str, np.ndarray]) -> None:
        """Store vectors (one transaction); keys already cached keep their vector."""
        rows = []
        for key, v in items.items():
            vec = np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(-1))
            rows.append((self.namespace, key, vec.size, vec.tobytes()))
        if rows:
            with self.store.transaction():
                self.store._conn.executemany(
                    "INSERT OR IGNORE INTO embeddings(namespace, key, dim, vec) VALUES (?, ?, ?, ?)", rows
                )

    def __len__(self) -> int:
        return self.store._read("SELECT count(*) FROM embeddings WHERE namespace = ?", (self.namespace,))[0][
            0
        ]
