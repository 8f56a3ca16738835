"""The command line: init, help texts, plan (before and after a run), status, error exits."""

from __future__ import annotations

import json

import pytest
from pipeline_fixtures import TEACHERS, C, N, T, base_run, cli, copy_run, routes, state, subset, tiny_config

from persyn.config import load_config


def test_init_writes_a_valid_starter_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "persyn.yaml"
    res = cli(["init", str(path)])
    assert res.exit_code == 0, res.output
    cfg = load_config(path)
    assert cfg.teacher_names == ["qwen", "gemma", "smollm"]
    path.write_text("# mine\n")
    res = cli(["init", str(path)])
    assert res.exit_code == 2 and "--force" in res.stderr
    assert path.read_text() == "# mine\n"
    res = cli(["init", str(path), "--force"])
    assert res.exit_code == 0 and "teachers:" in path.read_text()


def test_help_lists_stages_and_explains_force():
    res = cli(["--help"])
    for cmd in (
        "init",
        "plan",
        "run",
        "calibrate",
        "score",
        "train-router",
        "route",
        "generate",
        "export",
        "report",
        "strategies",
        "demo",
        "zoo",
        "router",
    ):
        assert cmd in res.stdout, cmd
    res = cli(["run", "--help"])
    text = " ".join(res.stdout.replace("│", " ").split())  # rich draws boxes around option help
    assert "--force" in text and "content key" in text and "learnability" in text
    assert "--retry-failed" in text and "--skip-bad-rows" in text


def test_plan_before_any_model_runs(tmp_path):
    from pipeline_fixtures import write_prompts

    write_prompts(tmp_path / "prompts.jsonl")
    cfg = tiny_config(
        tmp_path,
        extra={
            "teachers": [
                {
                    "name": "t1",
                    "model": "zoo:tiny-llama-s1",
                    "cost_per_1k_tokens": {"input": 1.0, "output": 2.0},
                },
                {"name": "t2", "model": "zoo:tiny-llama-s2"},
                {"name": "t3", "model": "zoo:tiny-llama-s3"},
            ]
        },
    )
    res = cli(["plan", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["n_prompts"] == N and plan["n_calibration"] == C
    assert plan["route_then_generate"]["generations"] == C * T + (N - C)
    assert plan["generate_then_select"]["generations"] == N * T
    assert plan["allocation"] == "assumed even split"
    t1 = plan["teachers"][0]
    assert t1["prompt_token_method"] == f"tokenizer (all {N} prompts)"
    assert t1["completion_token_method"].startswith("max_new_tokens")
    assert t1["completion_tokens"] == 8
    per = t1["prompt_tokens"] + t1["completion_tokens"]
    assert t1["cost"] == pytest.approx(
        t1["generations"] * (t1["prompt_tokens"] / 1000 * 1.0 + 8 / 1000 * 2.0)
    )
    assert t1["gts_tokens"] == pytest.approx(N * per)
    assert plan["teachers"][1]["cost"] is None
    assert sum(t["routed"] for t in plan["teachers"]) == N - C
    assert not (tmp_path / "run").exists()  # planning writes nothing
    res = cli(["plan", str(cfg)])
    assert "Generate-then-Select" in res.stdout and "tokenizer" in res.stdout


def test_doctor_says_what_dtype_auto_picks_and_why(monkeypatch):
    import persyn.util.hardware as hw

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # shown as a limit in force
    monkeypatch.setattr(hw, "cpu_info", lambda: hw.CpuInfo("AVX2", native_bf16=False))
    monkeypatch.setattr(hw.torch.cuda, "is_available", lambda: False)
    out = " ".join(cli(["doctor"]).stdout.split())
    assert "CPU capability AVX2, native bfloat16: no" in out and "limits ATEN_CPU_CAPABILITY=avx2" in out
    assert "dtype auto float32 (CPU has no native bfloat16 (AVX2)" in out and "torch threads" in out
    facts = json.loads(cli(["doctor", "--json"]).stdout)
    assert (facts["auto_dtype"], facts["native_bf16"]) == ("float32", False)
    assert facts["torch_capability"] == "AVX2"
    assert facts["threads"] >= 1 and facts["usable_cores"] >= 1 and facts["cpu"]
    monkeypatch.setattr(hw, "cpu_info", lambda: hw.CpuInfo("AVX512", native_bf16=True))
    assert "dtype auto bfloat16 (CPU computes bfloat16 natively" in " ".join(cli(["doctor"]).stdout.split())


def test_plan_reports_prompts_over_a_models_context_as_ingest_does(tmp_path):
    from pipeline_fixtures import write_prompts

    path = write_prompts(tmp_path / "prompts.jsonl")
    huge = " ".join(["word"] * 60_000)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "huge", "prompt": f"Summarise: {huge}"}) + "\n")
    cfg = tiny_config(tmp_path)
    plan = json.loads(cli(["plan", str(cfg), "--json"]).stdout)
    assert plan["n_prompts"] == N  # left out of the counts, as a run leaves it out
    assert plan["generate_then_select"]["generations"] == N * T
    too_long = plan["too_long"]
    assert {t["limit_name"] for t in too_long} == {"teacher t1", "teacher t2", "teacher t3", "student"}
    assert all(t["id"] == "huge" and t["source"].endswith(f"prompts.jsonl:{N + 1}") for t in too_long)
    assert all(t["tokens"] > 60_000 and t["max_tokens"] == 2048 - 8 for t in too_long)
    res = cli(["plan", str(cfg)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "1 prompt(s) exceed a model's context window and are left out" in text
    assert f"too long for teacher t1: {path}:{N + 1}" in text


def test_plan_after_a_run_uses_routes_and_observed_lengths(tmp_path_factory, tmp_path):
    root = copy_run(base_run(tmp_path_factory), tmp_path / "planned")
    res = cli(["plan", str(root / "persyn.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["allocation"] == "actual routes"
    run = root / "run"
    cal = set(subset(run, "calibration"))
    key = state(run, "route")["router_key"]
    routed = {}
    for (k, p), t in routes(run).items():
        if k == key and p not in cal:
            routed[t] = routed.get(t, 0) + 1
    assert {t["teacher"]: t["routed"] for t in plan["teachers"]} == {t: routed.get(t, 0) for t in TEACHERS}
    assert all(t["completion_token_method"].startswith("observed mean of") for t in plan["teachers"])
    assert sum(t["done"] for t in plan["teachers"]) == C * T + (N - C)


def test_status_and_errors(tmp_path_factory, tmp_path):
    root = base_run(tmp_path_factory)
    res = cli(["status", str(root / "persyn.yaml")])
    assert res.exit_code == 0 and "responses:" in res.stdout and "run done" in res.stdout
    res = cli(["run", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "cannot read config" in res.stderr
    res = cli(["strategies", str(root / "persyn.yaml"), "--strategies", "persyn,best"])
    assert res.exit_code == 2 and "unknown strategy ['best']" in res.stderr
