"""The run store: one directory per run, one SQLite database in it, every result keyed by content.

    store = RunStore.open("runs/my-student", config.model_dump(mode="json"))
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
- Every row has a content key: responses (teacher, gen_key, prompt_id) where `gen_key` covers the
  engine fingerprint and the generation parameters (`make_gen_key`); scores add (kind, scorer_key).
  So a change of model or parameters gets new keys and never reuses stale text, and a change of
  student changes only the learnability scorer_key.
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

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from persyn.prompts import Prompt, normalise_text

if TYPE_CHECKING:
    from persyn.engines.base import Generation

__all__ = [
    "ConfigMismatchError",
    "Event",
    "ResponseKey",
    "ResponseRow",
    "RouteSet",
    "RunDirBusyError",
    "RunStore",
    "ScoreRow",
    "StoreEmbeddingCache",
    "StoreError",
    "config_hash",
    "content_key",
    "make_gen_key",
]

SCHEMA_VERSION = 1
DB_NAME = "store.sqlite"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".persyn.lock"
# SQLite's historical bound on `?` parameters is 999; stay under it for old builds.
_CHUNK = 900

Status = Literal["ok", "error"]


class StoreError(RuntimeError):
    """The run store refused an operation (bad input, conflicting data, wrong directory)."""


class ConfigMismatchError(StoreError):
    """The run directory was made with another config. `changed_keys`: top-level keys that differ."""

    def __init__(self, message: str, changed_keys: list[str]):
        super().__init__(message)
        self.changed_keys = changed_keys


class RunDirBusyError(StoreError):
    """Another process has this run directory open for writing."""


# ----------------------------------------------------------------------------- keys


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys): the manifest's identity of a config."""
    return hashlib.sha256(_canonical_json(config).encode("utf-8")).hexdigest()


def content_key(*parts: Any) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of `parts`: for scorer and router keys,
    e.g. `content_key("learnability", student_fingerprint)`. Put in it everything that changes
    the value, and nothing that does not."""
    return hashlib.sha256(_canonical_json(list(parts)).encode("utf-8")).hexdigest()[:16]


def make_gen_key(engine_fingerprint: str, params_key: str) -> str:
    """The key of one teacher configuration: its engine fingerprint plus `GenerationParams.key()`.
    Changing the model, template, dtype or any generation parameter gives a new key."""
    return content_key("gen", engine_fingerprint, params_key)


class ResponseKey(NamedTuple):
    prompt_id: str
    teacher: str
    gen_key: str


# ----------------------------------------------------------------------------- rows


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass
class ResponseRow:
    """One teacher response, or one failed attempt at it (`status == "error"`, `error` set).

    `attempts` counts tries made for this write; when an error row is replaced by a retry, the
    stored count is the sum. `params` records the generation parameters (JSON-safe dict) and
    `meta` whatever the engine reported (`Generation.meta`).
    """

    prompt_id: str
    teacher: str
    gen_key: str
    text: str | None
    status: Status = "ok"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    attempts: int = 1
    params: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    duration_s: float | None = None
    created_at: float | None = None

    @property
    def key(self) -> ResponseKey:
        return ResponseKey(self.prompt_id, self.teacher, self.gen_key)

    @classmethod
    def from_generation(
        cls,
        prompt_id: str,
        teacher: str,
        gen_key: str,
        generation: Generation,
        *,
        params: dict[str, Any] | None = None,
        duration_s: float | None = None,
        attempts: int = 1,
    ) -> ResponseRow:
        return cls(
            prompt_id,
            teacher,
            gen_key,
            generation.text,
            "ok",
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            finish_reason=generation.finish_reason,
            attempts=attempts,
            params=params,
            meta=dict(generation.meta) or None,
            duration_s=duration_s,
        )

    @classmethod
    def failure(
        cls,
        prompt_id: str,
        teacher: str,
        gen_key: str,
        error: str | BaseException,
        *,
        params: dict[str, Any] | None = None,
        duration_s: float | None = None,
        attempts: int = 1,
    ) -> ResponseRow:
        msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(
            prompt_id,
            teacher,
            gen_key,
            None,
            "error",
            error=msg or "unknown error",
            attempts=attempts,
            params=params,
            duration_s=duration_s,
        )


@dataclass
class ScoreRow:
    """One score of one response. `value is None` means the scorer failed; `error` says why."""

    kind: str  # "quality", "learnability", ...
    scorer_key: str
    prompt_id: str
    teacher: str
    gen_key: str
    value: float | None
    error: str | None = None
    meta: dict[str, Any] | None = None
    created_at: float | None = None

    @property
    def key(self) -> ResponseKey:
        return ResponseKey(self.prompt_id, self.teacher, self.gen_key)


@dataclass
class RouteSet:
    """Routes made by one router (`router_key` covers the router weights and any caps/budget).
    `scores[i]` is the score vector of `prompt_ids[i]` over `teacher_names` (None if not kept)."""

    router_key: str
    teacher_names: list[str]
    prompt_ids: list[str]
    assigned: list[str]
    scores: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    stage: str
    kind: str
    message: str
    counts: dict[str, Any]

    def __str__(self) -> str:
        when = datetime.fromtimestamp(self.ts).strftime("%Y-%m-%d %H:%M:%S")
        return f"{when} {self.stage} {self.kind}: {self.message}"


# ----------------------------------------------------------------------------- schema

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- seq keeps the load order (calibration selection and exports follow it).
CREATE TABLE IF NOT EXISTS prompts(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    answer TEXT,
    source TEXT,
    meta TEXT
);

CREATE TABLE IF NOT EXISTS subsets(
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    prompt_id TEXT NOT NULL,
    PRIMARY KEY(name, position),
    UNIQUE(name, prompt_id)
) WITHOUT ROWID;

-- (teacher, gen_key) first: "which of these prompts does this teacher still owe" is a range scan.
CREATE TABLE IF NOT EXISTS responses(
    teacher TEXT NOT NULL,
    gen_key TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK(status IN ('ok', 'error')),
    text TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    finish_reason TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    params TEXT,
    meta TEXT,
    created_at REAL NOT NULL,
    duration_s REAL,
    CHECK(status = 'error' OR text IS NOT NULL),
    CHECK(status = 'ok' OR error IS NOT NULL),
    PRIMARY KEY(teacher, gen_key, prompt_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS scores(
    kind TEXT NOT NULL,
    scorer_key TEXT NOT NULL,
    teacher TEXT NOT NULL,
    gen_key TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    value REAL,
    error TEXT,
    meta TEXT,
    created_at REAL NOT NULL,
    CHECK(value IS NOT NULL OR error IS NOT NULL),
    PRIMARY KEY(kind, scorer_key, teacher, gen_key, prompt_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS route_sets(
    router_key TEXT PRIMARY KEY,
    teachers TEXT NOT NULL,
    meta TEXT,
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS routes(
    router_key TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    teacher TEXT NOT NULL,
    scores BLOB,
    PRIMARY KEY(router_key, prompt_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS embeddings(
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY(namespace, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS events(
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    stage TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    counts TEXT
);
CREATE INDEX IF NOT EXISTS events_by_stage ON events(stage, id);

CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""

# An ok row is final; an error row gives way to the next write of the same key.
_UPSERT_RESPONSE = """
INSERT INTO responses(teacher, gen_key, prompt_id, status, text, prompt_tokens, completion_tokens,
                      finish_reason, error, attempts, params, meta, created_at, duration_s)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(teacher, gen_key, prompt_id) DO UPDATE SET
    status = excluded.status, text = excluded.text, prompt_tokens = excluded.prompt_tokens,
    completion_tokens = excluded.completion_tokens, finish_reason = excluded.finish_reason,
    error = excluded.error, attempts = responses.attempts + excluded.attempts,
    params = excluded.params, meta = excluded.meta, created_at = excluded.created_at,
    duration_s = excluded.duration_s
WHERE responses.status = 'error'
"""

_UPSERT_SCORE = """
INSERT INTO scores(kind, scorer_key, teacher, gen_key, prompt_id, value, error, meta, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(kind, scorer_key, teacher, gen_key, prompt_id) DO UPDATE SET
    value = excluded.value, error = excluded.error, meta = excluded.meta, created_at = excluded.created_at
WHERE scores.value IS NULL
"""

_RESPONSE_COLS = (
    "teacher, gen_key, prompt_id, status, text, prompt_tokens, completion_tokens, finish_reason, "
    "error, attempts, params, meta, created_at, duration_s"
)


def _row_to_response(r: tuple) -> ResponseRow:
    (
        teacher,
        gen_key,
        prompt_id,
        status,
        text,
        ptok,
        ctok,
        finish,
        error,
        attempts,
        params,
        meta,
        created_at,
        duration,
    ) = r
    return ResponseRow(
        prompt_id,
        teacher,
        gen_key,
        text,
        status,
        ptok,
        ctok,
        finish,
        error,
        attempts,
        _loads(params),
        _loads(meta),
        duration,
        created_at,
    )


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _marks(n: int) -> str:
    return ",".join("?" * n)


# Config keys whose string value would be a secret. `api_key_env: OPENAI_API_KEY` (a variable
# *name*) is fine; `api_key: sk-...` is refused before anything is written.
_SECRET_KEY = re.compile(r"(^|_)(api_?key|secret|password|passwd|token|access_key|auth)$", re.IGNORECASE)


def _find_secrets(value: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            path = f"{where}.{k}" if where else str(k)
            if isinstance(v, str) and v and _SECRET_KEY.search(str(k)):
                found.append(path)
            else:
                found.extend(_find_secrets(v, path))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found.extend(_find_secrets(v, f"{where}[{i}]"))
    return found


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


# ----------------------------------------------------------------------------- the store


class RunStore:
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
            secrets = _find_secrets(config)
            if secrets:
                raise StoreError(
                    "the config holds what looks like a secret at "
                    + ", ".join(secrets)
                    + "; put secrets in environment variables and name the variable (e.g. api_key_env)"
                )
        db_path = run_dir / DB_NAME
        if readonly:
            if not db_path.is_file():
                raise StoreError(f"{run_dir} is not a persyn run directory (no {DB_NAME})")
            conn = sqlite3.connect(
                f"file:{db_path}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
            )
            _tune_reads(conn)
            store = cls(run_dir, conn, None, True, _read_manifest(run_dir))
            store._check_schema()
            return store

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
            manifest = _reconcile_manifest(run_dir, config, force)
            conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=30.0)
            # WAL: readers never block the writer; a commit is one append to the log.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            _tune_reads(conn)
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA temp_store = MEMORY")
            store = cls(run_dir, conn, lock, False, manifest)
            with store.transaction():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            store._check_schema()
            return store
        except BaseException:
            lock.release()
            raise

    def _check_schema(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.run_dir} was written by a newer persyn (store schema {version}, "
                f"this version reads up to {SCHEMA_VERSION})"
            )

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
        for chunk in _chunks(ids):
            for pid, text, answer in self._read(
                f"SELECT id, text, answer FROM prompts WHERE id IN ({_marks(len(chunk))})", chunk
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
        rows = [(p.id, p.text, p.answer, p.source, _dumps(p.meta or None)) for p in seen.values()]
        for chunk in _chunks(rows, batch_size):
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
            return [_row_to_prompt(r) for r in self._read(f"SELECT {cols} FROM prompts ORDER BY seq")]
        found: dict[str, Prompt] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            for r in self._read(f"SELECT {cols} FROM prompts WHERE id IN ({_marks(len(chunk))})", chunk):
                found[r[0]] = _row_to_prompt(r)
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
            yield [_row_to_prompt(r[1:]) for r in rows]

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
        for chunk in _chunks(ids):
            known += self._read(f"SELECT count(*) FROM prompts WHERE id IN ({_marks(len(chunk))})", chunk)[0][
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

    # ------------------------------------------------------------------ responses

    def put_responses(self, rows: Sequence[ResponseRow]) -> int:
        """Write a batch of responses in one transaction. Returns the rows written.

        A key with an 'ok' row is never touched again (a late duplicate is ignored); a key with
        an 'error' row is replaced by the new row (ok or error; attempts add up)."""
        now = time.time()
        params = []
        dumps = _JsonMemo()
        for r in rows:
            _check_response(r)
            params.append(
                (
                    r.teacher,
                    r.gen_key,
                    r.prompt_id,
                    r.status,
                    r.text,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.finish_reason,
                    r.error,
                    r.attempts,
                    dumps(r.params),
                    dumps(r.meta),
                    r.created_at if r.created_at is not None else now,
                    r.duration_s,
                )
            )
        if not params:
            return 0
        with self.transaction():
            before = self._conn.total_changes
            self._conn.executemany(_UPSERT_RESPONSE, params)
            return self._conn.total_changes - before

    def response_status(self, teacher: str, gen_key: str, prompt_ids: Sequence[str]) -> dict[str, Status]:
        """The stored status of each of `prompt_ids` that has a row ('ok' or 'error')."""
        out: dict[str, Status] = {}
        for chunk in _chunks(list(prompt_ids)):
            out.update(
                self._read(
                    "SELECT prompt_id, status FROM responses WHERE teacher = ? AND gen_key = ? "
                    f"AND prompt_id IN ({_marks(len(chunk))})",
                    (teacher, gen_key, *chunk),
                )
            )
        return out

    def responses_todo(
        self, teacher: str, gen_key: str, prompt_ids: Sequence[str], *, retry_failed: bool = False
    ) -> list[str]:
        """The prompts this teacher configuration still has to answer, in input order (deduplicated):
        those without a row, plus those whose row is an error when `retry_failed`."""
        ids = list(dict.fromkeys(prompt_ids))
        status = self.response_status(teacher, gen_key, ids)
        return [p for p in ids if p not in status or (retry_failed and status[p] == "error")]

    def get_response(self, teacher: str, gen_key: str, prompt_id: str) -> ResponseRow | None:
        rows = self._read(
            f"SELECT {_RESPONSE_COLS} FROM responses WHERE teacher = ? AND gen_key = ? AND prompt_id = ?",
            (teacher, gen_key, prompt_id),
        )
        return _row_to_response(rows[0]) if rows else None

    def get_responses(
        self,
        teacher: str,
        gen_key: str,
        prompt_ids: Sequence[str] | None = None,
        *,
        include_errors: bool = False,
    ) -> dict[str, ResponseRow]:
        """Responses of one teacher configuration by prompt id (all of them if `prompt_ids` is None).
        Error rows only with `include_errors`."""
        status = "" if include_errors else " AND status = 'ok'"
        base = f"SELECT {_RESPONSE_COLS} FROM responses WHERE teacher = ? AND gen_key = ?{status}"
        if prompt_ids is None:
            rows = self._read(base, (teacher, gen_key))
        else:
            rows = []
            for chunk in _chunks(list(dict.fromkeys(prompt_ids))):
                rows += self._read(
                    f"{base} AND prompt_id IN ({_marks(len(chunk))})", (teacher, gen_key, *chunk)
                )
        return {r[2]: _row_to_response(r) for r in rows}

    def iter_responses(
        self,
        teacher: str | None = None,
        gen_key: str | None = None,
        *,
        status: Status | None = "ok",
        batch_size: int = 10_000,
    ) -> Iterator[list[ResponseRow]]:
        """Stream responses (all teachers unless filtered), `batch_size` rows at a time, in key
        order. `status=None` yields error rows too."""
        where, args = [], []
        for col, val in (("teacher", teacher), ("gen_key", gen_key), ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        last: tuple[str, str, str] = ("", "", "")
        cond = " AND ".join([*where, "(teacher, gen_key, prompt_id) > (?, ?, ?)"])
        while True:
            rows = self._read(
                f"SELECT {_RESPONSE_COLS} FROM responses WHERE {cond} "
                "ORDER BY teacher, gen_key, prompt_id LIMIT ?",
                (*args, *last, batch_size),
            )
            if not rows:
                return
            last = (rows[-1][0], rows[-1][1], rows[-1][2])
            yield [_row_to_response(r) for r in rows]

    def response_counts(self) -> list[dict[str, Any]]:
        """Per (teacher, gen_key): ok and error rows, tokens and attempts (for the cost ledger)."""
        rows = self._read(
            "SELECT teacher, gen_key, sum(status = 'ok'), sum(status = 'error'), "
            "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), sum(attempts), "
            "coalesce(sum(duration_s), 0) FROM responses GROUP BY teacher, gen_key ORDER BY teacher, gen_key"
        )
        keys = (
            "teacher",
            "gen_key",
            "ok",
            "error",
            "prompt_tokens",
            "completion_tokens",
            "attempts",
            "duration_s",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ scores

    def put_scores(self, rows: Sequence[ScoreRow]) -> int:
        """Write a batch of scores in one transaction. Returns the rows written. A stored value is
        final; a stored failure (value None) is replaced by the next write of its key."""
        now = time.time()
        params = []
        for r in rows:
            v = r.value
            if v is not None:
                v = float(v)
                if not np.isfinite(v):
                    raise StoreError(
                        f"score {r.kind}/{r.key} is {v}; store failures as value=None with an error"
                    )
            elif not r.error:
                raise StoreError(f"score {r.kind}/{r.key} has neither a value nor an error message")
            params.append(
                (
                    r.kind,
                    r.scorer_key,
                    r.teacher,
                    r.gen_key,
                    r.prompt_id,
                    v,
                    r.error,
                    _dumps(r.meta),
                    r.created_at if r.created_at is not None else now,
                )
            )
        if not params:
            return 0
        with self.transaction():
            before = self._conn.total_changes
            self._conn.executemany(_UPSERT_SCORE, params)
            return self._conn.total_changes - before

    def _score_rows(self, kind: str, scorer_key: str, keys: Iterable[ResponseKey] | None) -> list[tuple]:
        cols = "teacher, gen_key, prompt_id, value, error, meta, created_at"
        if keys is None:
            return self._read(
                f"SELECT {cols} FROM scores WHERE kind = ? AND scorer_key = ?", (kind, scorer_key)
            )
        groups: dict[tuple[str, str], list[str]] = {}
        for k in keys:
            groups.setdefault((k[1], k[2]), []).append(k[0])
        rows: list[tuple] = []
        for (teacher, gen_key), pids in groups.items():
            for chunk in _chunks(list(dict.fromkeys(pids))):
                rows += self._read(
                    f"SELECT {cols} FROM scores WHERE kind = ? AND scorer_key = ? AND teacher = ? "
                    f"AND gen_key = ? AND prompt_id IN ({_marks(len(chunk))})",
                    (kind, scorer_key, teacher, gen_key, *chunk),
                )
        return rows

    def get_scores(
        self,
        kind: str,
        scorer_key: str,
        keys: Iterable[ResponseKey] | None = None,
        *,
        include_errors: bool = False,
    ) -> dict[ResponseKey, ScoreRow]:
        """Scores of one scorer, by response key (all of them when `keys` is None)."""
        out = {}
        for teacher, gen_key, pid, value, error, meta, created in self._score_rows(kind, scorer_key, keys):
            if value is None and not include_errors:
                continue
            out[ResponseKey(pid, teacher, gen_key)] = ScoreRow(
                kind, scorer_key, pid, teacher, gen_key, value, error, _loads(meta), created
            )
        return out

    def scores_todo(
        self, kind: str, scorer_key: str, keys: Iterable[ResponseKey], *, retry_failed: bool = False
    ) -> list[ResponseKey]:
        """The response keys this scorer still has to score, in input order (deduplicated):
        those without a row, plus failed ones when `retry_failed`."""
        wanted = list(dict.fromkeys(ResponseKey(*k) for k in keys))
        have = {
            ResponseKey(pid, t, g): value is not None
            for t, g, pid, value, *_ in self._score_rows(kind, scorer_key, wanted)
        }
        return [k for k in wanted if k not in have or (retry_failed and not have[k])]

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
                    (router_key, json.dumps(names), _dumps(dict(meta) if meta else None), time.time()),
                )
            elif json.loads(row[0]) != names:
                raise StoreError(
                    f"router {router_key!r} was stored with teachers {json.loads(row[0])}, not {names}"
                )
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT INTO routes(router_key, prompt_id, teacher, scores) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(router_key, prompt_id) DO NOTHING",
                [(router_key, p, a, b) for p, a, b in zip(prompt_ids, assigned, blobs, strict=True)],
            )
            return self._conn.total_changes - before

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
            for chunk in _chunks(list(dict.fromkeys(prompt_ids))):
                for r in self._read(
                    f"SELECT prompt_id, teacher, scores FROM routes WHERE router_key = ? "
                    f"AND prompt_id IN ({_marks(len(chunk))})",
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
            router_key, names, [r[0] for r in rows], [r[1] for r in rows], scores, _loads(head[0][1]) or {}
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
                (ts, stage, kind, message, _dumps(counts or None)),
            )
        return Event(cur.lastrowid, ts, stage, kind, message, counts)

    def log_todo(self, stage: str, done: int, todo: int, *, failed: int = 0, retrying: bool = False) -> Event:
        """The event each resumable stage logs before it starts work, e.g.
        "generate: 40 done earlier, 24 to do" (plus how failed rows are treated)."""
        msg = f"{done} done earlier, {todo} to do"
        if failed:
            msg += (
                f" ({failed} failed earlier, {'retrying' if retrying else 'not retried: use --retry-failed'})"
            )
        kind = "resume" if done or failed else "start"
        return self.log_event(stage, kind, msg, done=done, todo=todo, failed=failed)

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
        return [Event(i, ts, st, k, m, _loads(c) or {}) for i, ts, st, k, m, c in rows]

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


def _row_to_prompt(r: Sequence[Any]) -> Prompt:
    pid, text, answer, source, meta = r
    return Prompt(pid, text, answer, source, _loads(meta) or {})


def _prompt_differs(text: str, answer: str | None, p: Prompt) -> bool:
    return normalise_text(text) != normalise_text(p.text) or answer != p.answer


def _check_response(r: ResponseRow) -> None:
    # The common case first and cheap: this runs for every row written.
    if r.status == "ok" and isinstance(r.text, str) and r.attempts >= 0:
        return
    where = f"response {tuple(r.key)}"
    if r.status == "ok":
        if not isinstance(r.text, str):
            raise StoreError(f"{where}: status 'ok' needs a text")
    elif r.status == "error":
        if not r.error:
            raise StoreError(f"{where}: status 'error' needs an error message")
    else:
        raise StoreError(f"{where}: status must be 'ok' or 'error', not {r.status!r}")
    if r.attempts < 0:
        raise StoreError(f"{where}: attempts must be >= 0")


class _JsonMemo:
    """json.dumps, once per distinct object in a batch: rows of one batch usually share one params
    dict, and encoding it for every row was a third of the write time."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Any, str | None]] = {}

    def __call__(self, value: Any) -> str | None:
        if value is None:
            return None
        hit = self._memo.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        text = _dumps(value)
        self._memo[id(value)] = (value, text)  # holding `value` keeps its id from being reused
        return text


# ----------------------------------------------------------------------------- manifest


def _tune_reads(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout = 30000")  # wait for the writer's commit rather than fail
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
    # Memory-mapped reads: random lookups in a database larger than the page cache go through
    # the OS cache without a copy (measured: about 25% more point lookups per second at 1M rows).
    conn.execute("PRAGMA mmap_size = 1073741824")


def _read_manifest(run_dir: Path) -> dict | None:
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(
            f"{path} is unreadable ({e}); it records the run's config, restore or remove it"
        ) from e


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if _canonical_json(old.get(k)) != _canonical_json(new.get(k))]


def _reconcile_manifest(run_dir: Path, config: Mapping[str, Any] | None, force: bool) -> dict | None:
    from persyn import __version__

    manifest = _read_manifest(run_dir)
    if config is None:
        return manifest
    new_hash = config_hash(config)
    if manifest is None:
        # A new run, or a store first opened without a config (tests, tools): record this one.
        manifest = {
            "persyn_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "created_at": _now_iso(),
            "updated_at": _now_iso(),
            "config_hash": new_hash,
            "config": dict(config),
            "history": [],
        }
        _write_json_atomic(run_dir / MANIFEST_NAME, manifest)
        return manifest
    if manifest.get("config_hash") == new_hash:
        return manifest
    changed = _changed_keys(manifest.get("config") or {}, config)
    if not force:
        raise ConfigMismatchError(
            f"{run_dir} was made with another config (hash {str(manifest.get('config_hash'))[:12]}, now "
            f"{new_hash[:12]}); top-level keys that differ: {', '.join(changed) or '(none at top level)'}. "
            "Use a new output directory, or force to reuse this one (rows are keyed by content, so only "
            "what the change affects is recomputed).",
            changed,
        )
    manifest["history"] = [
        *manifest.get("history", []),
        {
            "config_hash": manifest.get("config_hash"),
            "replaced_at": _now_iso(),
            "changed_keys": changed,
        },
    ]
    manifest.update(
        config=dict(config), config_hash=new_hash, updated_at=_now_iso(), persyn_version=__version__
    )
    _write_json_atomic(run_dir / MANIFEST_NAME, manifest)
    return manifest


# ----------------------------------------------------------------------------- embedding cache


class StoreEmbeddingCache:
    """Float32 vectors by key in the run store; see `RunStore.embedding_cache`."""

    def __init__(self, store: RunStore, namespace: str = ""):
        self.store = store
        self.namespace = namespace

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys` (missing keys are simply absent)."""
        out: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(dict.fromkeys(keys))):
            for key, dim, blob in self.store._read(
                f"SELECT key, dim, vec FROM embeddings WHERE namespace = ? AND key IN ({_marks(len(chunk))})",
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
