"""The run store's database: the SQLite schema, the upserts that keep finished rows final, and
the connection settings. docs/store.md explains each table and each rule.

    conn = connect(run_dir / DB_NAME, readonly=False, synchronous="FULL")
    create_schema(conn)       # inside the caller's transaction
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from persyn.store.records import Prompt, ResponseRow, StoreError

SCHEMA_VERSION = 1
DB_NAME = "store.sqlite"
# SQLite's historical bound on `?` parameters is 999; stay under it for old builds.
CHUNK = 900

SCHEMA = """
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

-- The student's evaluation: one row per (what was measured, eval item). `key` is a content key of
-- the model, the metric and everything it depends on (stages/evaluate.py). `text` holds an answer
-- or a JSON list, `value` a number.
CREATE TABLE IF NOT EXISTS eval_rows(
    key TEXT NOT NULL,
    item TEXT NOT NULL,
    value REAL,
    text TEXT,
    meta TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY(key, item)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""

# An ok row is final; an error row gives way to the next write of the same key.
UPSERT_RESPONSE = """
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

UPSERT_SCORE = """
INSERT INTO scores(kind, scorer_key, teacher, gen_key, prompt_id, value, error, meta, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(kind, scorer_key, teacher, gen_key, prompt_id) DO UPDATE SET
    value = excluded.value, error = excluded.error, meta = excluded.meta, created_at = excluded.created_at
WHERE scores.value IS NULL
"""

RESPONSE_COLS = (
    "teacher, gen_key, prompt_id, status, text, prompt_tokens, completion_tokens, finish_reason, "
    "error, attempts, params, meta, created_at, duration_s"
)


def create_schema(conn: sqlite3.Connection) -> None:
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )


def check_schema(conn: sqlite3.Connection, run_dir: Path) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{run_dir} was written by a newer persyn (store schema {version}, "
            f"this version reads up to {SCHEMA_VERSION})"
        )


def connect(db_path: Path, *, readonly: bool, synchronous: Literal["FULL", "NORMAL"]) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            f"file:{db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=30.0
        )
    else:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")  # wait for the writer's commit rather than fail
    conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache
    # Memory-mapped reads: random lookups in a database larger than the page cache go through
    # the OS cache without a copy (measured: about 25% more point lookups per second at 1M rows).
    conn.execute("PRAGMA mmap_size = 1073741824")
    if not readonly:
        # WAL: readers never block the writer; a commit is one append to the log.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("PRAGMA temp_store = MEMORY")
    return conn


# ----------------------------------------------------------------------------- rows <-> values


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def marks(n: int) -> str:
    return ",".join("?" * n)


def row_to_response(r: tuple) -> ResponseRow:
    teacher, gen_key, prompt_id, status, text, ptok, ctok, finish, error, attempts, params, meta, at, dur = r
    return ResponseRow(
        prompt_id, teacher, gen_key, text, status, ptok, ctok, finish, error, attempts,
        loads(params), loads(meta), dur, at,
    )  # fmt: skip


def row_to_prompt(r: Sequence[Any]) -> Prompt:
    pid, text, answer, source, meta = r
    return Prompt(pid, text, answer, source, loads(meta) or {})
