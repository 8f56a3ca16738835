"""The run store: one directory per run, one SQLite database in it, every result keyed by content.

    store = RunStore.open("runs/my-student", config.manifest_dict())
    todo = store.responses_todo("qwen", gk, calib_ids, retry_failed=args.retry_failed)
    for batch in chunks(todo, 32):
        rows = [ResponseRow.from_generation(pid, "qwen", gk, g, params=...) for ...]
        store.put_responses(rows)               # one transaction: the whole batch or nothing

Layout of a run directory:
    manifest.json    the config (env var *names*, never keys) and its hash, plus the hash history
    store.sqlite     prompts, subsets, responses, scores, routes, embeddings, events, state
    .persyn.lock     held by the one writer process while the store is open
    (exports, router weights and the report live next to these; see `RunStore.path`)

Resume guarantees (docs/store.md has the full argument):
- Every row has a content key (`persyn.store.keys`): responses (teacher, gen_key, prompt_id) where
  `gen_key` covers the engine fingerprint and the generation parameters; scores add (kind,
  scorer_key). So a change of model or parameters gets new keys and never reuses stale text, and a
  change of student changes only the learnability scorer_key.
- Each `put_*` call is one transaction; a crash (SIGKILL included) loses at most the batch in
  flight, never a half-written row.
- Primary keys plus upserts that only replace *error* rows: a finished ('ok') row is never written
  twice or overwritten; an error row is replaced when its retry succeeds.
- `journal_mode=WAL`, `synchronous=FULL` by default: a COMMIT has reached the disk (fsync) before
  `put_*` returns, so even a power loss keeps every committed batch. `NORMAL` keeps them across a
  process crash but may lose the last few on power loss (the database stays consistent either way).

Concurrency: one writer process (the pipeline driver; with Ray, the driver writes what the workers
return) holds `.persyn.lock`; any number of readers (`RunStore.open(dir, readonly=True)`, e.g.
`persyn status` during a run) read committed data concurrently thanks to WAL. Within the writer,
one RunStore may be shared by threads (calls are serialised by a lock).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from persyn.store.evals import EvalTables
from persyn.store.manifest import check_no_secrets, read_manifest, reconcile_manifest
from persyn.store.records import (
    Event,
    Prompt,
    StoreError,
    normalise_text,
)
from persyn.store.results import ResultTables
from persyn.store.routes import RouteTables
from persyn.store.schema import (
    DB_NAME,
    SCHEMA_VERSION,
    check_schema,
    chunks,
    connect,
    create_schema,
    dumps,
    loads,
    marks,
    row_to_prompt,
)

__all__ = ["LOCK_NAME", "RunDirBusyError", "RunStore"]

LOCK_NAME = ".persyn.lock"


class RunDirBusyError(StoreError):
    """Another process has this run directory open for writing."""


class RunStore(ResultTables, RouteTables, EvalTables):
    """A run directory and its database. Build with `RunStore.open`; use as a context manager or
    call `close()`. All `put_*` methods are one transaction each (see `transaction()` to group
    several calls into one)."""

    def __init__(
        self, run_dir: Path, conn: sqlite3.Connection, lock: Any, readonly: bool, manifest: dict | None
    ):
        self.run_dir = run_dir
        self.readonly = readonly
        self.manifest = manifest
        self._conn = conn
        self._file_lock = lock
        self._mutex = threading.RLock()
        self._depth = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        config: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
        readonly: bool = False,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> RunStore:
        """Open (or create) a run directory.

        `config`: the run's config as a JSON-safe dict (e.g. `cfg.model_dump(mode="json")`). A new
        directory records it in manifest.json; an existing one must have been made with the same
        config (same hash), else `ConfigMismatchError` names the top-level keys that differ. With
        `force=True` the manifest takes the new config (the old hash goes into `history`) and rows
        are reused wherever their content keys still match. `config=None` skips the check.

        `readonly=True` opens an existing store for reading while a writer may be running.
        Raises `RunDirBusyError` if another process has the directory open for writing.
        """
        run_dir = Path(run_dir)
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if config is not None:
            check_no_secrets(config)
        db_path = run_dir / DB_NAME
        if readonly:
            if not db_path.is_file():
                raise StoreError(f"{run_dir} is not a persyn run directory (no {DB_NAME})")
            conn = connect(db_path, readonly=True, synchronous=synchronous)
            check_schema(conn, run_dir)
            return cls(run_dir, conn, None, True, read_manifest(run_dir))

        from filelock import FileLock, Timeout

        run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(run_dir / LOCK_NAME, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirBusyError(
                f"{run_dir} is open for writing by another process (a running `persyn` command?); "
                "wait for it to finish, or open the store read-only"
            ) from None
        try:
            manifest = reconcile_manifest(run_dir, config, force, SCHEMA_VERSION)
            conn = connect(db_path, readonly=False, synchronous=synchronous)
            store = cls(run_dir, conn, lock, False, manifest)
            with store.transaction():
                create_schema(conn)
            check_schema(conn, run_dir)
            return store
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def exists(run_dir: str | Path) -> bool:
        """Whether `run_dir` holds a run store."""
        return (Path(run_dir) / DB_NAME).is_file()

    def close(self) -> None:
        with self._mutex:
            if self._conn is None:
                return
            if not self.readonly:
                try:
                    self._conn.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
            self._conn.close()
            self._conn = None  # type: ignore[assignment]
            if self._file_lock is not None:
                self._file_lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, *parts: str) -> Path:
        """A path inside the run directory (for exports, router weights, the report)."""
        return self.run_dir.joinpath(*parts)

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction: all of them are committed, or none. Nested uses
        join the outermost one. `put_*` methods use this themselves."""
        if self.readonly:
            raise StoreError("this store is open read-only")
        with self._mutex:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            # IMMEDIATE takes the write lock now, so a batch never fails half-way on a busy database.
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._mutex:
            return self._conn.execute(sql, params).fetchall()

    def _write_many(self, sql: str, params: Sequence[Sequence[Any]]) -> int:
        """Run one statement over many rows inside the current transaction; returns how many rows
        it changed (an upsert that keeps the stored row counts none)."""
        before = self._conn.total_changes
        self._conn.executemany(sql, params)
        return self._conn.total_changes - before

    # ------------------------------------------------------------------ prompts

    def put_prompts(self, prompts: Iterable[Prompt], *, batch_size: int = 20_000) -> int:
        """Add prompts (keyed by id; load order kept). Returns how many were new.

        A prompt already stored is kept; its `source` and `meta` are refreshed. An id already
        stored with another text or answer means the prompt file changed under this run:
        `StoreError` is raised before anything is written.
        """
        plist = list(prompts)
        seen: dict[str, Prompt] = {}
        conflicts: list[str] = []
        for p in plist:
            if not isinstance(p, Prompt):
                raise TypeError(f"put_prompts takes persyn.prompts.Prompt objects, got {type(p).__name__}")
            prev = seen.get(p.id)
            if prev is not None and _prompt_differs(prev.text, prev.answer, p):
                conflicts.append(f"{p.id!r} appears twice with different text or answer")
            seen[p.id] = p
        existing: dict[str, tuple[str, str | None]] = {}
        ids = list(seen)
        for chunk in chunks(ids):
            for pid, text, answer in self._read(
                f"SELECT id, text, answer FROM prompts WHERE id IN ({marks(len(chunk))})", chunk
            ):
                existing[pid] = (text, answer)
                if _prompt_differs(text, answer, seen[pid]):
                    conflicts.append(f"{pid!r} is stored with a different text or answer")
        if conflicts:
            raise StoreError(
                f"{len(conflicts)} prompt id(s) conflict with this run's prompts (did the prompt file "
                "change? use a new output dir): "
                + "; ".join(conflicts[:5])
                + (" ..." if len(conflicts) > 5 else "")
            )
        rows = [(p.id, p.text, p.answer, p.source, dumps(p.meta or None)) for p in seen.values()]
        for chunk in chunks(rows, batch_size):
            with self.transaction():
                self._conn.executemany(
                    "INSERT INTO prompts(id, text, answer, source, meta) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET source = excluded.source, meta = excluded.meta "
                    "WHERE source IS NOT excluded.source OR meta IS NOT excluded.meta",
                    chunk,
                )
        return len(ids) - len(existing)

    def count_prompts(self) -> int:
        return self._read("SELECT count(*) FROM prompts")[0][0]

    def prompt_ids(self) -> list[str]:
        """All prompt ids, in load order."""
        return [r[0] for r in self._read("SELECT id FROM prompts ORDER BY seq")]

    def get_prompts(self, ids: Sequence[str] | None = None) -> list[Prompt]:
        """Prompts by id (in the order of `ids`), or all of them in load order. Unknown ids raise
        `KeyError`."""
        cols = "id, text, answer, source, meta"
        if ids is None:
            return [row_to_prompt(r) for r in self._read(f"SELECT {cols} FROM prompts ORDER BY seq")]
        found: dict[str, Prompt] = {}
        for chunk in chunks(list(dict.fromkeys(ids))):
            for r in self._read(f"SELECT {cols} FROM prompts WHERE id IN ({marks(len(chunk))})", chunk):
                found[r[0]] = row_to_prompt(r)
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"{len(missing)} unknown prompt id(s), e.g. {missing[:3]}")
        return [found[i] for i in ids]

    def iter_prompts(self, batch_size: int = 10_000) -> Iterator[list[Prompt]]:
        """All prompts in load order, a list of up to `batch_size` at a time (constant memory)."""
        last = 0
        while True:
            rows = self._read(
                "SELECT seq, id, text, answer, source, meta FROM prompts WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, batch_size),
            )
            if not rows:
                return
            last = rows[-1][0]
            yield [row_to_prompt(r[1:]) for r in rows]

    # ------------------------------------------------------------------ subsets

    def set_subset(self, name: str, prompt_ids: Sequence[str], *, replace: bool = False) -> None:
        """Record a named, ordered subset of prompts (e.g. "calibration").

        Setting the same subset again is a no-op; setting a different one raises `StoreError`
        unless `replace=True` (resume must not silently change which prompts were calibrated).
        """
        ids = list(prompt_ids)
        if len(set(ids)) != len(ids):
            raise StoreError(f"subset {name!r} lists a prompt more than once")
        current = self.get_subset(name)
        if current == ids:
            return
        if current is not None and not replace:
            raise StoreError(
                f"subset {name!r} already holds {len(current)} other prompts; pass replace=True to change it"
            )
        known = 0
        for chunk in chunks(ids):
            known += self._read(f"SELECT count(*) FROM prompts WHERE id IN ({marks(len(chunk))})", chunk)[0][
                0
            ]
        if known != len(ids):
            raise StoreError(f"subset {name!r} names {len(ids) - known} prompt id(s) not in this run")
        with self.transaction():
            self._conn.execute("DELETE FROM subsets WHERE name = ?", (name,))
            self._conn.executemany(
                "INSERT INTO subsets(name, position, prompt_id) VALUES (?, ?, ?)",
                [(name, i, pid) for i, pid in enumerate(ids)],
            )

    def get_subset(self, name: str) -> list[str] | None:
        """The subset's prompt ids in order, or None if there is no such subset."""
        rows = self._read("SELECT prompt_id FROM subsets WHERE name = ? ORDER BY position", (name,))
        return [r[0] for r in rows] if rows else None

    def subsets(self) -> dict[str, int]:
        return dict(self._read("SELECT name, count(*) FROM subsets GROUP BY name ORDER BY name"))

    # ------------------------------------------------------------------ events and state

    def log_event(self, stage: str, kind: str, message: str = "", **counts: Any) -> Event:
        """Append to the run's event log (joins an open transaction, so an event can commit with
        the batch it describes). Example:
        `store.log_event("generate", "resume", "40 done earlier, 24 to do", done=40, todo=24)`.
        Kinds in use: start, resume, progress, done, error, info."""
        ts = time.time()
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO events(ts, stage, kind, message, counts) VALUES (?, ?, ?, ?, ?)",
                (ts, stage, kind, message, dumps(counts or None)),
            )
        return Event(cur.lastrowid, ts, stage, kind, message, counts)

    def log_todo(
        self,
        stage: str,
        done: int,
        todo: int,
        *,
        failed: int = 0,
        retrying: bool = False,
        unit: str | None = None,
    ) -> Event:
        """The event each resumable stage logs before it starts work, e.g.
        "generate: qwen: 40 done earlier, 24 to do" (plus how failed rows are treated)."""
        msg = f"{unit + ': ' if unit else ''}{done} done earlier, {todo} to do"
        if failed:
            msg += (
                f" ({failed} failed earlier, {'retrying' if retrying else 'not retried: use --retry-failed'})"
            )
        kind = "resume" if done or failed else "start"
        counts = {"unit": unit} if unit else {}
        return self.log_event(stage, kind, msg, **counts, done=done, todo=todo, failed=failed)

    def events(self, stage: str | None = None, kind: str | None = None, *, since_id: int = 0) -> list[Event]:
        """Logged events in order, optionally of one stage and/or kind, after `since_id`."""
        where, args = ["id > ?"], [since_id]
        if stage is not None:
            where.append("stage = ?")
            args.append(stage)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        rows = self._read(
            f"SELECT id, ts, stage, kind, message, counts FROM events WHERE {' AND '.join(where)} "
            "ORDER BY id",
            args,
        )
        return [Event(i, ts, st, k, m, loads(c) or {}) for i, ts, st, k, m, c in rows]

    def set_state(self, key: str, value: Any) -> None:
        """Remember a small JSON-safe fact across commands (e.g. which router key is current)."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO state(key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO "
                "UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, json.dumps(value, default=str), time.time()),
            )

    def get_state(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def stats(self) -> dict[str, int]:
        """Row counts per table (for `persyn status` and the report)."""
        tables = ("prompts", "subsets", "responses", "scores", "routes", "embeddings", "events")
        return {t: self._read(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def _prompt_differs(text: str, answer: str | None, p: Prompt) -> bool:
    return normalise_text(text) != normalise_text(p.text) or answer != p.answer
