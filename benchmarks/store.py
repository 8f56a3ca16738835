"""Run-store speed at pipeline scale, against baselines measured in the same run.

    .venv/bin/python benchmarks/store.py                 # 1M response rows (about a minute)
    .venv/bin/python benchmarks/store.py --rows 200000   # quicker

Importable: `run_store_benchmark(...)` returns the figures as a dict (benchmarks/pipeline.py folds
it in). What it measures, on one fresh run directory:
- write: `RunStore.put_responses` in batches (one transaction each, synchronous=FULL as the store
  ships), against plain `sqlite3.executemany` into a bare table (no key, no index, same pragmas,
  same batches); and the store with synchronous=NORMAL on a slice, to show what the fsync costs;
- point lookups: random `get_response` calls, against a Python dict of the same keys (and, to show
  why the key matters, the bare table, which has to scan);
- "which of these 10K prompts are still to do": `responses_todo` on 10K ids (half done), against a
  Python set difference.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from persyn.store import ResponseRow, RunStore, make_gen_key

BARE_TABLE = """CREATE TABLE responses(teacher TEXT, gen_key TEXT, prompt_id TEXT, status TEXT, text TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT, error TEXT, attempts INTEGER,
    params TEXT, meta TEXT, created_at REAL, duration_s REAL)"""


def _rows(n_rows: int, n_teachers: int, text_chars: int):
    """Deterministic rows: n_rows responses spread over n_teachers teachers."""
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz     .,"
    base = "".join(rng.choice(alphabet) for _ in range(text_chars + 1000))
    per = -(-n_rows // n_teachers)
    gks = [make_gen_key(f"model-{t}", "params") for t in range(n_teachers)]
    params = {"max_new_tokens": 256, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    for i in range(n_rows):
        t, j = divmod(i, per)
        off = (i * 7919) % 1000
        yield ResponseRow(
            f"p{j:08d}",
            f"teacher{t}",
            gks[t],
            base[off : off + text_chars],
            "ok",
            40,
            120,
            "stop",
            None,
            1,
            params,
            None,
            0.5,
            1.7e9 + i,
        )


def _batches(it, size):
    batch = []
    for x in it:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _tuple(r: ResponseRow) -> tuple:
    return (
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
        '{"max_new_tokens": 256}',
        None,
        r.created_at,
        r.duration_s,
    )


def _write_all(tmp: Path, rows, batch_size: int, slice_rows: int) -> dict[str, tuple[float, int]]:
    """Write every batch to the store (FULL) and to the bare table, and the first `slice_rows` to a
    second store with synchronous=NORMAL, one target after the other for each batch, so that all
    of them see the same disk and cache conditions. Returns {target: (seconds, rows)}."""
    stores = {
        "store": RunStore.open(tmp / "run"),
        "normal": RunStore.open(tmp / "run-normal", synchronous="NORMAL"),
    }
    bare = sqlite3.connect(tmp / "bare.sqlite", isolation_level=None)
    bare.execute("PRAGMA journal_mode = WAL")
    bare.execute("PRAGMA synchronous = FULL")
    bare.execute(BARE_TABLE)
    sql = f"INSERT INTO responses VALUES ({','.join('?' * 14)})"
    out = {k: [0.0, 0] for k in ("store", "bare", "normal", "store_slice")}
    try:
        for batch in _batches(rows, batch_size):
            t0 = time.perf_counter()
            stores["store"].put_responses(batch)
            dt = time.perf_counter() - t0
            out["store"][0] += dt
            out["store"][1] += len(batch)
            tuples = [_tuple(r) for r in batch]  # built outside the clock: the baseline gets ready rows
            t0 = time.perf_counter()
            bare.execute("BEGIN IMMEDIATE")
            bare.executemany(sql, tuples)
            bare.execute("COMMIT")
            out["bare"][0] += time.perf_counter() - t0
            out["bare"][1] += len(batch)
            if out["normal"][1] < slice_rows:
                out["store_slice"][0] += dt
                out["store_slice"][1] += len(batch)
                t0 = time.perf_counter()
                stores["normal"].put_responses(batch)
                out["normal"][0] += time.perf_counter() - t0
                out["normal"][1] += len(batch)
    finally:
        for st in stores.values():
            st.close()
        bare.close()
    return {k: (v[0], v[1]) for k, v in out.items()}


def run_store_benchmark(
    n_rows: int = 1_000_000,
    batch_size: int = 256,
    text_chars: int = 300,
    n_teachers: int = 4,
    n_lookups: int = 20_000,
    n_todo_ids: int = 10_000,
    workdir: str | Path | None = None,
    log=print,
) -> dict:
    """Measure the store; return figures (rates in rows or queries per second, times in seconds)."""
    tmp = Path(tempfile.mkdtemp(prefix="persyn-store-bench-", dir=workdir))
    fig: dict = {"rows": n_rows, "batch_size": batch_size, "text_chars": text_chars, "teachers": n_teachers}
    try:
        log(f"writing {n_rows:,} response rows in batches of {batch_size} ...")
        w = _write_all(tmp, _rows(n_rows, n_teachers, text_chars), batch_size, min(n_rows, 100_000))
        fig["write_store_rows_per_s"] = w["store"][1] / w["store"][0]
        fig["write_bare_rows_per_s"] = w["bare"][1] / w["bare"][0]
        fig["write_ratio_store_vs_bare"] = fig["write_store_rows_per_s"] / fig["write_bare_rows_per_s"]
        fig["write_slice_rows"] = w["normal"][1]
        fig["write_slice_full_rows_per_s"] = w["store_slice"][1] / w["store_slice"][0]
        fig["write_slice_normal_rows_per_s"] = w["normal"][1] / w["normal"][0]
        fig["db_bytes"] = sum(f.stat().st_size for f in (tmp / "run").glob("store.sqlite*"))

        rng = random.Random(1)
        per = -(-n_rows // n_teachers)
        gks = [make_gen_key(f"model-{t}", "params") for t in range(n_teachers)]
        keys = []
        for _ in range(n_lookups):
            i = rng.randrange(n_rows)
            t, j = divmod(i, per)
            keys.append((f"teacher{t}", gks[t], f"p{j:08d}"))
        store = RunStore.open(tmp / "run", readonly=True)
        t0 = time.perf_counter()
        found = sum(store.get_response(*k) is not None for k in keys)
        s = time.perf_counter() - t0
        assert found == n_lookups
        fig["lookup_store_per_s"] = n_lookups / s

        mem = {
            (r.teacher, r.gen_key, r.prompt_id): (r.text, r.status)
            for r in _rows(n_rows, n_teachers, text_chars)
        }
        t0 = time.perf_counter()
        found = sum(mem.get(k) is not None for k in keys)
        fig["lookup_dict_per_s"] = n_lookups / (time.perf_counter() - t0)
        fig["lookup_ratio_store_vs_dict"] = fig["lookup_store_per_s"] / fig["lookup_dict_per_s"]

        bare = sqlite3.connect(tmp / "bare.sqlite")
        t0 = time.perf_counter()
        for k in keys[:3]:
            bare.execute(
                "SELECT text FROM responses WHERE teacher = ? AND gen_key = ? AND prompt_id = ?", k
            ).fetchone()
        fig["lookup_bare_scan_per_s"] = 3 / (time.perf_counter() - t0)
        bare.close()

        # Half of the asked ids are done (teacher0 holds p0..p{per-1}), half are not.
        half = n_todo_ids // 2
        ask = [f"p{j:08d}" for j in rng.sample(range(per), half)] + [
            f"p{per + j:08d}" for j in range(n_todo_ids - half)
        ]
        t0 = time.perf_counter()
        todo = store.responses_todo("teacher0", gks[0], ask)
        fig["todo_10k_store_s"] = time.perf_counter() - t0
        assert len(todo) == n_todo_ids - half
        done_set = {k[2] for k in mem if k[0] == "teacher0"}
        t0 = time.perf_counter()
        todo_mem = [p for p in ask if p not in done_set]
        fig["todo_10k_set_s"] = time.perf_counter() - t0
        assert todo_mem == todo
        fig["todo_ratio_store_vs_set"] = fig["todo_10k_set_s"] / fig["todo_10k_store_s"]
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return fig


def report(fig: dict) -> str:
    f = fig
    return "\n".join(
        [
            f"run store, {f['rows']:,} response rows of {f['text_chars']} chars, batches of "
            f"{f['batch_size']}, {f['teachers']} teachers (database {f['db_bytes'] / 2**20:.0f} MiB)",
            f"  write:  store {f['write_store_rows_per_s']:,.0f} rows/s, bare sqlite table "
            f"{f['write_bare_rows_per_s']:,.0f} rows/s: ratio {f['write_ratio_store_vs_bare']:.2f}",
            f"          first {f['write_slice_rows']:,} rows: synchronous=FULL "
            f"{f['write_slice_full_rows_per_s']:,.0f} rows/s, NORMAL "
            f"{f['write_slice_normal_rows_per_s']:,.0f} rows/s",
            f"  lookup: store {f['lookup_store_per_s']:,.0f}/s, dict {f['lookup_dict_per_s']:,.0f}/s: ratio "
            f"{f['lookup_ratio_store_vs_dict']:.3f} (bare table, no key: "
            f"{f['lookup_bare_scan_per_s']:.1f}/s)",
            f"  to-do among 10K ids: store {f['todo_10k_store_s'] * 1000:.1f} ms, "
            f"set {f['todo_10k_set_s'] * 1000:.1f} ms: ratio {f['todo_ratio_store_vs_set']:.3f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--text-chars", type=int, default=300)
    ap.add_argument("--teachers", type=int, default=4)
    ap.add_argument(
        "--workdir", default=None, help="where to put the temporary databases (default: system temp)"
    )
    args = ap.parse_args(argv)
    fig = run_store_benchmark(args.rows, args.batch, args.text_chars, args.teachers, workdir=args.workdir)
    print(report(fig))
    return 0


if __name__ == "__main__":
    sys.exit(main())
