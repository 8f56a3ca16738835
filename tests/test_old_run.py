"""A run directory written by an older persyn still resumes: tests/fixtures/old_run was made by
persyn at commit 17c945d (before the run state had one home; tests/fixtures/make_old_run.py says
how). This code opens it, accepts its manifest, finds every row and file it needs under the same
keys, and computes nothing again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pipeline_fixtures import GenerateSpy, cli, db, events, responses, routes, scores, state

pytest.importorskip("persyn.engines.transformers_engine")

OLD_RUN = Path(__file__).parent / "fixtures" / "old_run"


def _subsets(run: Path) -> dict[str, list[str]]:
    with db(run) as con:
        rows = con.execute("SELECT name, prompt_id FROM subsets ORDER BY name, position").fetchall()
    out: dict[str, list[str]] = {}
    for name, pid in rows:
        out.setdefault(name, []).append(pid)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy of the fixture (even a read-only SQLite connection leaves -wal/-shm files beside it)."""
    return shutil.copytree(OLD_RUN, tmp_path / "old")


def test_the_fixture_is_an_old_finished_run(old_run):
    assert not (OLD_RUN / "run" / "store.sqlite-wal").exists()  # closed cleanly: every row is in the file
    run = old_run / "run"
    for name in (
        "manifest.json",
        "store.sqlite",
        "routing.json",
        "export.json",
        "dataset/persyn.messages.jsonl",
    ):
        assert (run / name).is_file(), name
    assert len(responses(run)) == 20  # 6 calibration prompts x 3 teachers + 2 routed
    assert state(run, "route")["router_key"] in {k for k, _ in routes(run)}


def test_an_old_run_directory_resumes_with_nothing_computed_again(old_run, monkeypatch):
    root = old_run
    run = root / "run"
    before = {
        "responses": responses(run),
        "scores": scores(run),
        "routes": routes(run),
        "subsets": _subsets(run),
        "router": state(run, "router")["key"],  # its "path": where the run lies now
        "route": state(run, "route"),
        "calibration": state(run, "calibration"),
        "gen_keys": state(run, "gen_keys"),
    }
    routers = _files(run / "routers")
    routing = json.loads((run / "routing.json").read_text())
    dataset = (run / "dataset" / "persyn.messages.jsonl").read_bytes()
    n_events = len(events(run))

    spy = GenerateSpy(monkeypatch)
    res = cli(["run", str(root / "persyn.yaml")])
    assert res.exit_code == 0, res.output

    assert spy.total_generated == 0
    after = {
        "responses": responses(run),
        "scores": scores(run),
        "routes": routes(run),
        "subsets": _subsets(run),
        "router": state(run, "router")["key"],
        "route": state(run, "route"),
        "calibration": state(run, "calibration"),
        "gen_keys": state(run, "gen_keys"),
    }
    for name in before:
        assert after[name] == before[name], name  # same keys: every row found, none added
    assert _files(run / "routers") == routers  # the router was not trained again
    assert json.loads((run / "routing.json").read_text())["router_key"] == routing["router_key"]
    assert (run / "dataset" / "persyn.messages.jsonl").read_bytes() == dataset  # the same dataset
    assert (run / "report" / "index.html").is_file()

    # Every stage that looked for work logged what it found: all of it done earlier.
    looked = [e for e in events(run)[n_events:] if e["kind"] in ("resume", "start")]
    assert [e["stage"] for e in looked if e["kind"] == "start"] == []
    assert {e["stage"] for e in looked} >= {"calibrate", "score", "train-router", "route", "generate"}
    assert all(e["counts"]["todo"] == 0 for e in looked if "todo" in e["counts"]), looked
    # Not even loaded: each model's fingerprint is remembered under its spec's digest (a change to
    # the EngineSpec's JSON would make every existing run load each model once more to learn it).
    assert spy.loads == {}
    assert "0 to do" in res.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert not manifest.get("history")  # the same config: opened as is, not replaced
