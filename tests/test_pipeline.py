"""The pipeline end to end on tiny random models, through the CLI: outputs, counts, resume, and a
change of student that reuses every response and quality score."""

from __future__ import annotations

import json

import pytest
from pipeline_fixtures import (
    TEACHERS,
    C,
    GenerateSpy,
    N,
    T,
    base_output,
    base_run,
    cli,
    copy_run,
    event_count,
    events,
    responses,
    routed_teachers,
    routes,
    scores,
    state,
    subset,
    tiny_config,
    work_starts,
)

pytest.importorskip("persyn.engines.transformers_engine")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return base_run(tmp_path_factory)


def _gen_keys(run_dir) -> dict[str, str]:
    """teacher -> gen_key of the run's teacher configurations."""
    return {v["teacher"]: k for k, v in state(run_dir, "gen_keys").items()}


def test_run_writes_every_output(base):
    run = base / "run"
    for name in ("manifest.json", "store.sqlite", "routing.json", "export.json", "prompts/load_report.json"):
        assert (run / name).is_file(), name
    ds = run / "dataset"
    for name in (
        "persyn.messages.jsonl",
        "persyn.prompt_completion.jsonl",
        "persyn.sharegpt.json",
        "persyn.parquet",
        "dataset_info.json",
        "README.md",
    ):
        assert (ds / name).is_file(), name
    assert (ds / "persyn.hf" / "dataset_info.json").is_file()
    for name in ("index.html", "allocation.png", "router_quality.png", "cost.png"):
        assert (run / "report" / name).is_file(), name
    (router,) = (run / "routers").iterdir()
    for name in ("router.json", "head.safetensors", "metrics.json"):
        assert (router / name).is_file(), name
    doc = json.loads((router / "metrics.json").read_text())
    metrics = doc["metrics"]
    assert {"router", "random", "strongest", "car", "knn", "oracle"} <= set(metrics)
    assert metrics["oracle"]["regret"] == pytest.approx(0.0)
    # Cross-validated over every calibration prompt, each with its 95% interval (not a held-out few).
    assert doc["evaluation"] == {"method": "cross-validation", "folds": 5, "n_prompts": C}
    assert all(m["n"] + m["n_skipped"] == C for m in metrics.values())
    lo, hi = metrics["router"]["ci95"]["regret"]
    assert lo <= metrics["router"]["regret"] <= hi
    html = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert f"5-fold cross-validation over all {C} calibration prompts" in html


def test_generation_count_is_calibration_times_teachers_plus_routed(base):
    run = base / "run"
    rows = responses(run)
    gks = _gen_keys(run)
    assert set(gks) == set(TEACHERS)
    assert all(v[0] == "ok" for v in rows.values())
    assert len(rows) == C * T + (N - C)
    cal = set(subset(run, "calibration"))
    assert len(cal) == C
    for t, gk in gks.items():  # every teacher answered every calibration prompt
        assert {p for (tt, g, p) in rows if tt == t and g == gk} >= cal
    # Each prompt outside calibration was answered by exactly its routed teacher, once.
    key = state(run, "route")["router_key"]
    routed = {p: t for (k, p), t in routes(run).items() if k == key}
    assert len(routed) == N
    for p, t in routed.items():
        if p not in cal:
            assert [tt for (tt, _, pp) in rows if pp == p] == [t]
    # The dataset: one row per prompt, from its routed teacher.
    lines = (run / "dataset" / "persyn.messages.jsonl").read_text().splitlines()
    got = {json.loads(x)["prompt_id"]: json.loads(x)["teacher"] for x in lines}
    assert got == routed
    row = json.loads(lines[0])
    assert row["messages"][0]["role"] == "user" and row["messages"][1]["role"] == "assistant"
    assert row["generation"]["gen_key"] == gks[row["teacher"]]
    assert len(scores(run)) >= 2 * C * T  # quality + learnability for every calibration response


def test_summary_names_paths_and_counts(tmp_path_factory, base):
    out = base_output(tmp_path_factory)
    assert str(base / "run" / "dataset") in out.replace("\n", "")
    assert "index.html" in out
    assert f"{C * T + N - C} ({C} calibration x {T} teachers + {N - C} routed) vs {N * T}" in " ".join(
        out.split()
    )


def test_the_dtype_each_model_ran_in_is_recorded(base):
    """The run's state, its events, the report and `persyn status` say how each model ran (the
    dtype depends on the machine with `dtype: auto`; these configs pin float32)."""
    import torch

    run = base / "run"
    engines = state(run, "engines")
    roles = sorted(r for info in engines.values() for r in info["roles"])
    assert roles == sorted([*TEACHERS, "judge", "student"])
    for fp, info in engines.items():
        assert info["fingerprint"] == fp and fp in set(state(run, "fingerprints").values())
        assert info["dtype"] == "float32" and info["dtype_reason"] == "set in the config"
        assert info["device"] == "cpu" and info["threads"] == torch.get_num_threads()
    lines = [e["message"] for e in events(run, "engines")]
    assert any(m.startswith("t1 (zoo:tiny-llama-s1): float32 on cpu") for m in lines)
    html = (run / "report" / "index.html").read_text()
    assert "Model t1 (zoo:tiny-llama-s1): float32 on cpu" in html
    out = cli(["status", str(base / "persyn.yaml")]).stdout
    assert "model judge (zoo:tiny-llama-s5): float32 on cpu" in out


def test_resume_events_and_second_run_does_nothing(tmp_path, base, monkeypatch):
    root = copy_run(base, tmp_path / "again")
    before = responses(root / "run")
    spy = GenerateSpy(monkeypatch)
    since = event_count(root / "run")
    res = cli(["run", str(root / "persyn.yaml")])
    assert res.exit_code == 0, res.output
    assert spy.total_generated == 0
    assert responses(root / "run") == before
    # This run's resume line of each teacher with routed prompts: everything done earlier, nothing to do.
    last = work_starts(root / "run", "generate", since)
    assert set(last) == routed_teachers(root / "run") and last
    assert all(e["counts"]["todo"] == 0 for e in last.values())
    assert "0 to do" in res.stderr


def test_changing_the_student_reuses_responses_and_quality(tmp_path, base, monkeypatch):
    root = copy_run(base, tmp_path / "student")
    run = root / "run"
    tiny_config(root, student_seed=6)  # only the student changes
    res = cli(["calibrate", str(root / "persyn.yaml")])
    assert res.exit_code == 2
    assert "student" in res.stderr and "--force" in res.stderr

    resp_before, scores_before = responses(run), scores(run)
    router_before = state(run, "router")["key"]
    route_before = state(run, "route")["router_key"]
    spy = GenerateSpy(monkeypatch)
    for stage in ("calibrate", "score", "train-router", "route"):
        res = cli([stage, str(root / "persyn.yaml"), "--force"])
        assert res.exit_code == 0, res.output
    assert spy.total_generated == 0  # no teacher generated anything
    assert "zoo:tiny-llama-s1" not in spy.loads  # ... nor was loaded
    assert responses(run) == resp_before
    after = scores(run)
    quality_before = {k: v for k, v in scores_before.items() if k[0] == "quality"}
    assert {k: v for k, v in after.items() if k[0] == "quality"} == quality_before  # reused, none new
    learn_keys = {k[1] for k in after if k[0] == "learnability"}
    assert len(learn_keys) == 2  # the old student's and the new one's
    assert sum(k[0] == "learnability" for k in after) == 2 * C * T
    assert state(run, "router")["key"] != router_before
    route_after = state(run, "route")["router_key"]
    assert route_after != route_before
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["history"][-1]["changed_keys"] == ["student"]

    # generate: only prompts whose new teacher had not answered them yet.
    gks = _gen_keys(run)
    have = {(t, p) for (t, g, p) in responses(run) if gks.get(t) == g}
    new_routes = {p: t for (k, p), t in routes(run).items() if k == route_after}
    expected = sum((t, p) not in have for p, t in new_routes.items())
    res = cli(["generate", str(root / "persyn.yaml"), "--force"])
    assert res.exit_code == 0, res.output
    assert spy.total_generated == expected
    assert len(responses(run)) == len(resp_before) + expected


def test_stage_before_its_inputs_says_what_to_run(tmp_path):
    from pipeline_fixtures import write_prompts

    write_prompts(tmp_path / "prompts.jsonl")
    cfg = tiny_config(tmp_path)
    res = cli(["route", str(cfg)])
    assert res.exit_code == 2
    assert "persyn calibrate" in res.stderr or "train-router" in res.stderr


def test_each_model_loads_once_per_stage(tmp_path, monkeypatch):
    from pipeline_fixtures import write_prompts

    write_prompts(tmp_path / "prompts.jsonl", n_math=6, n_instructions=6)
    # Freed before the next one loads (as on a GPU): a model is loaded at most once per stage.
    cfg = tiny_config(tmp_path, calibration=6, selection="random", extra={"executor.max_loaded_engines": 1})
    spy = GenerateSpy(monkeypatch)
    res = cli(["calibrate", str(cfg)])
    assert res.exit_code == 0, res.output
    assert spy.loads == {f"zoo:tiny-llama-s{i}": 1 for i in (1, 2, 3)}
    assert spy.generated == {f"zoo:tiny-llama-s{i}": 6 for i in (1, 2, 3)}


def test_a_failed_generation_is_recorded_and_retried(tmp_path, monkeypatch):
    from pipeline_fixtures import write_prompts

    from persyn.engines.transformers_engine import TransformersEngine

    path = write_prompts(tmp_path / "prompts.jsonl", n_math=5, n_instructions=5)
    victim = json.loads(path.read_text().splitlines()[0])
    cfg = tiny_config(tmp_path, calibration=4, selection="random")
    real = TransformersEngine.generate

    def flaky(engine, prompts, params):
        if victim["prompt"] in prompts:
            raise RuntimeError("the accelerator fell over")
        return real(engine, prompts, params)

    monkeypatch.setattr(TransformersEngine, "generate", flaky)
    res = cli(["run", str(cfg)])
    assert res.exit_code == 0, res.output  # the run goes on
    run = tmp_path / "run"
    failed = {k: v for k, v in responses(run).items() if v[0] == "error"}
    assert failed and all(k[2] == victim["id"] for k in failed)
    ok = sum(v[0] == "ok" for v in responses(run).values())
    with __import__("sqlite3").connect(run / "store.sqlite") as con:
        errors = [r[0] for r in con.execute("SELECT error FROM responses WHERE status = 'error'")]
    assert all("the accelerator fell over" in e for e in errors)
    rows = (run / "dataset" / "persyn.messages.jsonl").read_text().splitlines()
    assert victim["id"] not in {json.loads(r)["prompt_id"] for r in rows} and len(rows) == 9
    assert "failed" in (run / "dataset" / "README.md").read_text()

    monkeypatch.setattr(TransformersEngine, "generate", real)
    res = cli(["run", str(cfg)])  # without --retry-failed, failures stay
    assert {k for k, v in responses(run).items() if v[0] == "error"} == set(failed)
    res = cli(["run", str(cfg), "--retry-failed"])
    assert res.exit_code == 0, res.output
    after = responses(run)
    assert all(v[0] == "ok" for v in after.values())
    assert all(after[k][-1] == 2 for k in failed)  # attempts add up
    assert sum(v[0] == "ok" for v in after.values()) == ok + len(failed)
    rows = (run / "dataset" / "persyn.messages.jsonl").read_text().splitlines()
    assert len(rows) == 10


def test_caps_and_best_label_for_calibration_prompts(tmp_path, base):
    import numpy as np

    from persyn.scoring import combine_labels

    root = copy_run(base, tmp_path / "capped")
    run = root / "run"
    cal = subset(run, "calibration")
    key = state(run, "route")["router_key"]
    outside = {p: t for (k, p), t in routes(run).items() if k == key and p not in cal}
    top = max(TEACHERS, key=lambda t: sum(v == t for v in outside.values()))
    cfg = str(root / "persyn.yaml")
    sets = ["--set", f"routing.caps.{top}.max_generations=2", "--set", "routing.calibration_prompts=best"]
    res = cli(["route", cfg, "--force", *sets])
    assert res.exit_code == 0, res.output
    new_key = state(run, "route")["router_key"]
    assert new_key != key  # caps are part of the router key
    new = {p: t for (k, p), t in routes(run).items() if k == new_key}
    assert len(new) == N
    assert sum(new[p] == top for p in outside) <= 2
    doc = json.loads((run / "routing.json").read_text())
    assert doc["routing"]["method"] == "capped" and doc["routing"]["optimal"]
    assert doc["routing"]["counts"][top] <= 2
    # Calibration prompts: the teacher with the best combined label (alpha 0.4, z-scores).
    gks = _gen_keys(run)
    sc = scores(run)
    q = np.full((len(cal), T), np.nan)
    lm = np.full((len(cal), T), np.nan)
    for (kind, _k, t, g, p), v in sc.items():
        if p in cal and g == gks.get(t) and v is not None:
            (q if kind == "quality" else lm)[cal.index(p), TEACHERS.index(t)] = v
    labels = combine_labels(q, lm, alpha=0.4)
    for i, p in enumerate(cal):
        if not np.isnan(labels[i]).all():
            assert new[p] == TEACHERS[int(np.nanargmax(labels[i]))]
    # Generating under the new routes adds exactly the responses the capped routes lack.
    have = {(t, p) for (t, g, p) in responses(run) if gks.get(t) == g}
    missing = sum((t, p) not in have for p, t in new.items())
    before = len(responses(run))
    res = cli(["generate", cfg, "--force", *sets])
    assert res.exit_code == 0, res.output
    assert len(responses(run)) == before + missing
