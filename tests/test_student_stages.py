"""The student's stages through the CLI on tiny random Llamas: `persyn train`, `persyn eval` and
`persyn compare` on a finished run, resuming from the store and the students' folders."""

from __future__ import annotations

import json

import pytest
import yaml
from pipeline_fixtures import GenerateSpy, base_run, cli, copy_run, db

pytest.importorskip("trl")
pytest.importorskip("persyn.engines.transformers_engine")

TRAIN = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128, "save_steps": 2}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _student_config(root, *, examples=None, eval_sets=None):
    """The base run's config with `train:` and `eval:` sections (outside the manifest: no --force)."""
    from persyn.demo import generate_math_problems

    cfg_path = root / "persyn.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    run_prompts = {json.loads(x)["prompt"] for x in (root / "prompts.jsonl").read_text().splitlines()}
    math = [p for p in generate_math_problems(12, seed=321) if p.prompt not in run_prompts][:8]
    _write_jsonl(root / "eval-math.jsonl", [{"prompt": p.prompt, "answer": p.answer} for p in math])
    _write_jsonl(
        root / "eval-open.jsonl",
        [{"prompt": t} for t in ("Name three colours.", "Write a haiku about tea.", "Why is the sky blue?")],
    )
    cfg["train"] = {**TRAIN, **({"examples": examples} if examples else {})}
    cfg["eval"] = {
        "sets": eval_sets
        or [
            {"name": "math", "path": "eval-math.jsonl", "answer_field": "answer", "answer_limit": 6},
            {"name": "open", "path": "eval-open.jsonl"},
        ],
        "max_new_tokens": 8,
        "batch_size": 4,
        "resamples": 200,
    }
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_path


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
    root = copy_run(base_run(tmp_path_factory), tmp_path_factory.mktemp("student") / "r")
    return root, _student_config(root)


def _eval_rows(run) -> int:
    with db(run) as con:
        return con.execute("SELECT COUNT(*) FROM eval_rows").fetchone()[0]


def test_compare_trains_every_strategy_alike_and_tables_them_and_resumes(student_run, monkeypatch):
    root, cfg = student_run
    res = cli(["compare", str(cfg), "--strategies", "persyn,strong,random"])
    assert res.exit_code == 0, res.output
    run = root / "run"
    doc = json.loads((run / "compare.json").read_text())
    rows = {r["name"]: r for r in doc["table"]["rows"]}
    assert list(rows) == ["untrained", "persyn", "strong", "random"]
    # Same examples, settings and base model for every strategy, by construction and on disk
    infos = {
        s: json.loads((run / "students" / s / "train.json").read_text())
        for s in ("persyn", "strong", "random")
    }
    assert (
        len({i["examples"] for i in infos.values()}) == 1 and infos["persyn"]["examples"] == doc["examples"]
    )
    assert len({json.dumps(i["settings"], sort_keys=True) for i in infos.values()}) == 1
    assert all((run / "students" / s / "model" / "config.json").is_file() for s in infos)
    # every model has every metric of both sets, with intervals; trained ones the win rate too
    for name, r in rows.items():
        for col in ("math/accuracy", "math/reference_loglik", "math/reference_margin", "open/judge_score"):
            m = r["metrics"][col]
            assert m["n"] > 0 and m["low"] <= m["mean"] <= m["high"], (name, col, m)
        assert ("open/win_rate" in r["metrics"]) == (name != "untrained")
        assert name == "untrained" or "untrained" in r["vs"]
        assert r["cost"] is None if name == "untrained" else r["cost"]["generations"] > 0
    assert rows["untrained"]["metrics"]["math/accuracy"]["n"] == 6  # answer_limit
    assert rows["untrained"]["metrics"]["math/reference_loglik"]["n"] == 8  # every item
    assert set(doc["teachers"]) <= {"t1", "t2", "t3"} and doc["teachers"]
    assert "untrained" in res.stdout and "persyn" in res.stdout
    report = (run / "report" / "index.html").read_text()
    assert "Student comparison" in report
    stored = _eval_rows(run)
    assert stored > 0

    # Again: nothing generated, trained or evaluated twice; the same table
    spy = GenerateSpy(monkeypatch)
    again = cli(["compare", str(cfg), "--strategies", "persyn,strong,random"])
    assert again.exit_code == 0, again.output
    assert spy.total_generated == 0 and _eval_rows(run) == stored
    assert json.loads((run / "compare.json").read_text())["table"] == doc["table"]
    for s, info in infos.items():
        assert json.loads((run / "students" / s / "train.json").read_text()) == info


def test_eval_resumes_from_its_rows_in_the_store(tmp_path_factory, monkeypatch):
    root = copy_run(base_run(tmp_path_factory), tmp_path_factory.mktemp("eval") / "r")
    cfg = _student_config(root)
    run = root / "run"
    assert cli(["eval", str(cfg), "--model", "base"]).exit_code == 0
    with db(run) as con:
        answers = con.execute("SELECT key, item FROM eval_rows WHERE text IS NOT NULL").fetchall()
    assert len(answers) == 6 + 3  # answered math items and open prompts
    # Lose three answers (as a kill mid-eval would): only those are generated again
    import sqlite3

    con = sqlite3.connect(run / "store.sqlite")
    with con:
        con.executemany("DELETE FROM eval_rows WHERE key = ? AND item = ?", answers[:3])
    con.close()
    spy = GenerateSpy(monkeypatch)
    res = cli(["eval", str(cfg), "--model", "base", "--json"])
    assert res.exit_code == 0, res.output
    assert spy.total_generated == 3
    metrics = json.loads(res.stdout)
    assert metrics["math"]["metrics"]["accuracy"]["n"] == 6


def test_eval_refuses_prompts_the_student_may_have_trained_on(student_run, tmp_path):
    root, cfg = student_run
    first = json.loads((root / "prompts.jsonl").read_text().splitlines()[0])
    _write_jsonl(root / "leaky.jsonl", [{"prompt": "A new question?"}, {"prompt": first["prompt"]}])
    res = cli(["eval", str(cfg), "--set", 'eval.sets=[{"name": "leaky", "path": "leaky.jsonl"}]'])
    assert res.exit_code == 2
    assert "1 of 2 prompts also appear in the training prompts" in res.stderr


def test_train_is_not_redone_and_other_settings_are_refused_without_retrain(student_run):
    root, cfg = student_run
    # car: a strategy the compare test (same run) did not train
    res = cli(["train", str(cfg), "--strategy", "car", "--examples", "8"])
    assert res.exit_code == 0, res.output
    again = cli(["train", str(cfg), "--strategy", "car", "--examples", "8"])
    assert again.exit_code == 0 and "already trained" in again.stdout
    other = cli(["train", str(cfg), "--strategy", "car", "--examples", "8", "--set", "train.epochs=2"])
    assert other.exit_code == 2 and "--retrain" in other.stderr
    model = root / "run" / "students" / "car" / "model"
    assert cli(["eval", str(cfg), "--model", str(model)]).exit_code == 0
    unknown = cli(["eval", str(cfg), "--model", "mix"])
    assert unknown.exit_code == 2 and "persyn train CONFIG --strategy mix" in unknown.stderr


@pytest.mark.slow
def test_compare_with_seeds_alpha_grid_and_a_primary_comparison(tmp_path_factory):
    """Seeds for PerSyn and Strong, PerSyn's alpha chosen on a validation set and reported on test,
    identical datasets trained once, the pre-registered comparison and Strong's gain in compare.json;
    the alpha variants never replace the run's own routing."""
    from persyn.demo import generate_math_problems

    root = copy_run(base_run(tmp_path_factory), tmp_path_factory.mktemp("grid") / "r")
    run_prompts = {json.loads(x)["prompt"] for x in (root / "prompts.jsonl").read_text().splitlines()}
    val = [p for p in generate_math_problems(12, seed=654) if p.prompt not in run_prompts][:6]
    _write_jsonl(root / "val-math.jsonl", [{"prompt": p.prompt, "answer": p.answer} for p in val])
    sets = [
        {"name": "math", "path": "eval-math.jsonl", "answer_field": "answer", "answer_limit": 6},
        {"name": "math-val", "path": "val-math.jsonl", "answer_field": "answer", "split": "validation"},
    ]
    cfg = _student_config(root, eval_sets=sets)
    run = root / "run"
    routing_before = json.loads((run / "routing.json").read_text())["router_key"]
    args = ["compare", str(cfg), "--strategies", "persyn,strong,car", "--alpha-grid", "0,0.9"]
    res = cli([*args, "--seeds", "0,1", "--primary", "persyn:strong:accuracy"])
    assert res.exit_code == 0, res.output
    doc = json.loads((run / "compare.json").read_text())

    assert json.loads((run / "routing.json").read_text())["router_key"] == routing_before
    alpha = doc["alpha"]
    assert [c["alpha"] for c in alpha["curve"]] == [0.0, 0.9] and alpha["chosen"] in (0.0, 0.9)
    assert all(c["validation"]["n"] == 6 for c in alpha["curve"]) and alpha["sets"] == ["math-val"]
    rows = {r["name"]: r for r in doc["table"]["rows"]}
    assert list(rows) == ["untrained", "persyn", "strong", "car", "persyn (chosen alpha)"]
    assert all(set(r["metrics"]) >= {"math/accuracy"} for r in rows.values())
    assert all(not c.startswith("math-val/") for c in doc["table"]["columns"])  # validation: choice only

    # Seeds: PerSyn and Strong twice (unless their data is another arm's), each seed's mean kept.
    students = {p.name for p in (run / "students").iterdir()}
    for arm in ("persyn", "strong"):
        if arm in doc["same_data_as"]:
            continue
        assert {arm, f"{arm}+seed1"} <= students
        assert len(doc["seed_means"][arm]["math"]["accuracy"]) == 2
    # Identical data is trained once: no student folder of its own.
    for arm, same in doc["same_data_as"].items():
        assert arm not in students and same in doc["arms"]
    assert doc["routed_unlike_strong"]["strong"] == 0.0
    assert doc["primary"]["metric"] == "accuracy" and list(doc["primary"]["tests"]) == ["math/accuracy"]
    t = doc["primary"]["tests"]["math/accuracy"]
    assert 0 <= t["p_value"] <= 1 and t["difference"]["n"] == 6
    assert isinstance(doc["strong_gain"]["informative"], bool) and doc["strong_gain"]["tests"]
    assert doc["exploratory"]["holm_adjusted_p"]
    assert "primary (named before the run): persyn vs strong on accuracy" in res.stdout
