"""The responses and scores tables of the run store: what the teachers wrote, and how each
response scored. A part of `RunStore` (store.py builds the class from these tables); each `put_*`
is one transaction, and a finished row is final (docs/store.md, "Write rules")."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from persyn.store.records import ResponseKey, ResponseRow, ScoreRow, Status, StoreError
from persyn.store.schema import (
    RESPONSE_COLS,
    UPSERT_RESPONSE,
    UPSERT_SCORE,
    chunks,
    dumps,
    loads,
    marks,
    row_to_response,
)


class ResultTables:
    """Responses and scores; mixed into `RunStore`, whose `_read`, `_write_many`, `_conn` and
    `transaction` it uses."""

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
            return self._write_many(UPSERT_RESPONSE, params)

    def response_status(self, teacher: str, gen_key: str, prompt_ids: Sequence[str]) -> dict[str, Status]:
        """The stored status of each of `prompt_ids` that has a row ('ok' or 'error')."""
        out: dict[str, Status] = {}
        for chunk in chunks(list(prompt_ids)):
            out.update(
                self._read(
                    "SELECT prompt_id, status FROM responses WHERE teacher = ? AND gen_key = ? "
                    f"AND prompt_id IN ({marks(len(chunk))})",
                    (teacher, gen_key, *chunk),
                )
            )
        return out

    def responses_todo(
        self, teacher: str, gen_key: str, prompt_ids: Sequence[str], *, retry_failed: bool = False
    ) -> list[str]:
        """The prompts this teacher configuration still has to answer, in input order (deduplicated):
        those without a row, plus those whose row is an error when `retry_failed`."""
        return self.response_progress(teacher, gen_key, prompt_ids, retry_failed=retry_failed)[0]

    def response_progress(
        self, teacher: str, gen_key: str, prompt_ids: Sequence[str], *, retry_failed: bool = False
    ) -> tuple[list[str], int, int]:
        """(`responses_todo`, how many of `prompt_ids` hold an ok row, how many an error row)."""
        ids = list(dict.fromkeys(prompt_ids))
        status = self.response_status(teacher, gen_key, ids)
        todo = [p for p in ids if p not in status or (retry_failed and status[p] == "error")]
        failed = sum(s == "error" for s in status.values())
        return todo, len(status) - failed, failed

    def get_response(self, teacher: str, gen_key: str, prompt_id: str) -> ResponseRow | None:
        rows = self._read(
            f"SELECT {RESPONSE_COLS} FROM responses WHERE teacher = ? AND gen_key = ? AND prompt_id = ?",
            (teacher, gen_key, prompt_id),
        )
        return row_to_response(rows[0]) if rows else None

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
        base = f"SELECT {RESPONSE_COLS} FROM responses WHERE teacher = ? AND gen_key = ?{status}"
        if prompt_ids is None:
            rows = self._read(base, (teacher, gen_key))
        else:
            rows = []
            for chunk in chunks(list(dict.fromkeys(prompt_ids))):
                rows += self._read(
                    f"{base} AND prompt_id IN ({marks(len(chunk))})", (teacher, gen_key, *chunk)
                )
        return {r[2]: row_to_response(r) for r in rows}

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
                f"SELECT {RESPONSE_COLS} FROM responses WHERE {cond} "
                "ORDER BY teacher, gen_key, prompt_id LIMIT ?",
                (*args, *last, batch_size),
            )
            if not rows:
                return
            last = (rows[-1][0], rows[-1][1], rows[-1][2])
            yield [row_to_response(r) for r in rows]

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
                    dumps(r.meta),
                    r.created_at if r.created_at is not None else now,
                )
            )
        if not params:
            return 0
        with self.transaction():
            return self._write_many(UPSERT_SCORE, params)

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
            for chunk in chunks(list(dict.fromkeys(pids))):
                rows += self._read(
                    f"SELECT {cols} FROM scores WHERE kind = ? AND scorer_key = ? AND teacher = ? "
                    f"AND gen_key = ? AND prompt_id IN ({marks(len(chunk))})",
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
                kind, scorer_key, pid, teacher, gen_key, value, error, loads(meta), created
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
        text = dumps(value)
        self._memo[id(value)] = (value, text)  # holding `value` keeps its id from being reused
        return text
