"""Crash and resume: `persyn run` SIGKILLed in the middle of `calibrate`, resumed and SIGKILLed in
the middle of `generate`, then run again, ends with exactly the rows a clean run produces, none
written twice, and its events show that the rows finished before each crash were not recomputed.

The kill is deterministic: PERSYN_TEST_KILL_AFTER=STAGE:N makes the process (tests/crash_cli.py,
the CLI with the pipeline's `on_commit` hook set) SIGKILL itself right after its N-th committed
batch in STAGE (batches of 4 rows here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_fixtures import (
    C,
    N,
    T,
    cli,
    event_count,
    events,
    responses,
    routes,
    scores,
    tiny_config,
    work_starts,
    write_prompts,
)

pytest.importorskip("persyn.engines.transformers_engine")

BATCH = 4
CRASH_CLI = Path(__file__).parent / "crash_cli.py"


def persyn(args: list[str], kill_after: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PERSYN_TEST_KILL_AFTER"}
    if kill_after:
        env["PERSYN_TEST_KILL_AFTER"] = kill_after
    return subprocess.run(
        [sys.executable, str(CRASH_CLI), *args], env=env, capture_output=True, text=True, timeout=600
    )


def _config_for(root, out: str):
    # Same config, another output dir (not part of the run's identity).
    return tiny_config(root, out=out, batch_size=BATCH, selection="random", name=f"{out}.yaml")


def _same_store(a, b):
    ra, rb = responses(a), responses(b)
    assert ra == rb  # same keys, text, token counts, status
    assert all(v[-1] == 1 for v in rb.values())  # attempts: none generated twice
    sa, sb = scores(a), scores(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sb[k] == pytest.approx(sa[k], abs=1e-6)
    assert routes(a) == routes(b)  # same router key (same router weights) and same teachers
    da = (a / "dataset" / "persyn.messages.jsonl").read_text()
    assert (b / "dataset" / "persyn.messages.jsonl").read_text() == da


def _starts(run_dir, stage: str) -> list[dict]:
    return [e for e in events(run_dir, stage) if e["kind"] in ("resume", "start")]


def test_sigkill_in_calibrate_and_in_generate_then_resume(tmp_path):
    """One run killed twice: in `calibrate` (after 3 batches), then, resumed, in `generate` (after
    2 batches); resumed again it matches a clean run of the same config row for row."""
    write_prompts(tmp_path / "prompts.jsonl")
    clean = cli(["run", str(_config_for(tmp_path, "clean"))])  # in-process: the reference
    assert clean.exit_code == 0, clean.output
    cfg = _config_for(tmp_path, "crashed")
    run = tmp_path / "crashed"

    # 1. Killed in calibrate after 3 committed batches of 4: t1's 8 prompts and 4 of t2's.
    res = persyn(["run", str(cfg)], kill_after="calibrate:3")
    assert res.returncode == -signal.SIGKILL, res.stderr
    rows = responses(run)
    assert len(rows) == 3 * BATCH
    assert sorted({k[0] for k in rows}) == ["t1", "t2"]
    assert not (run / "dataset").exists()

    # 2. Resumed, and killed in generate after 2 committed batches.
    res = persyn(["run", str(cfg)], kill_after="generate:2")
    assert res.returncode == -signal.SIGKILL, res.stderr
    lines = [e["message"] for e in _starts(run, "calibrate")]
    assert lines[-3:] == [
        "t1: 8 done earlier, 0 to do",
        "t2: 4 done earlier, 4 to do",
        "t3: 0 done earlier, 8 to do",
    ]
    before_crash = len(responses(run)) - C * T  # routed rows committed before the second kill
    assert 0 < before_crash <= 2 * BATCH

    # 3. Resumed to the end: exactly the clean run's rows, scores, routes and dataset.
    since = event_count(run)
    res = persyn(["run", str(cfg)])
    assert res.returncode == 0, res.stderr
    _same_store(tmp_path / "clean", run)
    assert len(responses(run)) == C * T + (N - C)
    # The last run counted the rows made before the crash as done and generated exactly the rest.
    clean_done = sum(e["counts"]["done"] for e in _starts(tmp_path / "clean", "generate"))
    done_after = sum(e["counts"]["done"] for e in work_starts(run, "generate", since).values())
    finished = [e for e in events(run)[since:] if e["stage"] == "generate" and e["kind"] == "done"]
    new_after = sum(e["counts"]["new"] for e in finished)
    assert done_after == clean_done + before_crash
    assert new_after == (N - C) - before_crash
    assert "done earlier" in res.stderr
    # Nothing of calibrate or score was redone by the last run.
    assert all(e["counts"]["todo"] == 0 for e in _starts(run, "calibrate")[-T:])
