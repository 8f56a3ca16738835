"""The whole pipeline with the real zoo models, small: `persyn demo` with 36 prompts (12
calibration x 3 teachers + 24 routed), 32 new tokens. Qwen2.5-Coder-0.5B, Gemma-3-270M (completion
template) and SmolLM2-135M teach; SmolLM2 is the student; math is scored by its answers and the
instructions by the Qwen judge."""

from __future__ import annotations

import json

import pytest
from pipeline_fixtures import cli, event_count, responses, routed_teachers, scores, state, subset, work_starts

pytestmark = [pytest.mark.zoo, pytest.mark.slow]
pytest.importorskip("persyn.engines.transformers_engine")

N, C, T = 36, 12, 3


def test_demo_end_to_end_with_zoo_models(tmp_path):
    out = tmp_path / "demo"
    res = cli(
        ["demo", "--dir", str(out), "--prompts", str(N), "--calibration", str(C), "--max-new-tokens", "32"]
    )
    assert res.exit_code == 0, res.output
    # First tries only: a response cut at the token limit has a second try under its own key.
    second = {gk for gk, v in state(out, "gen_keys").items() if v.get("regenerates")}
    everything = responses(out)
    rows = {k: v for k, v in everything.items() if k[1] not in second}
    assert len(rows) == C * T + (N - C)
    assert sum(v[0] == "ok" for v in rows.values()) >= len(rows) - 2  # real models: allow a rare failure
    cal = set(subset(out, "calibration"))
    assert len(cal) == C
    # One quality method per prompt: answer matching for math (0/1), the judge for instructions.
    prompts = {
        json.loads(x)["id"]: json.loads(x) for x in next(out.glob("prompts-*.jsonl")).read_text().splitlines()
    }
    methods = {}
    for (kind, key, _t, _g, pid), value in scores(out).items():
        if kind == "quality":
            methods.setdefault(pid, set()).add(key.split(":")[0])
            if key.startswith("answers"):
                assert value in (0.0, 1.0)
    assert set(methods) == cal
    for pid, m in methods.items():
        assert m == ({"answers"} if prompts[pid]["answer"] is not None else {"judge"})
    metrics = json.loads((out / "routers" / state(out, "router")["key"] / "metrics.json").read_text())[
        "metrics"
    ]
    assert {"router", "strongest", "car", "oracle"} <= set(metrics)
    dataset = (out / "dataset" / "persyn-demo.messages.jsonl").read_text().splitlines()
    left = json.loads((out / "export.json").read_text())["persyn"]["left_out"]
    assert len(dataset) + sum(left.values()) == N
    assert (out / "report" / "index.html").is_file()
    assert "Generate-then-Select" in " ".join(res.stdout.split())
    # Re-running the demo resumes: nothing is generated again. Only this run's events count, one
    # per teacher the router gave work (which teachers those are depends on the CPU's arithmetic).
    since = event_count(out)
    res = cli(
        ["demo", "--dir", str(out), "--prompts", str(N), "--calibration", str(C), "--max-new-tokens", "32"]
    )
    assert res.exit_code == 0, res.output
    assert responses(out) == everything  # nothing generated again, first tries or second
    gen = {u: e for u, e in work_starts(out, "generate", since).items() if " (cut at" not in u}
    assert set(gen) == routed_teachers(out) and gen
    assert all(e["counts"]["todo"] == 0 and e["counts"]["done"] > 0 for e in gen.values())
