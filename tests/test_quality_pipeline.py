"""Quality labels in a run: a new answer checker re-checks the stored answers and nothing else (no
model loads, no response and no judge or learnability score is recomputed, each new row keeps its
verdict's reason), and the report counts the labels of each method and says how far to trust them."""

from __future__ import annotations

import json
import re

import pytest
from pipeline_fixtures import (
    GenerateSpy,
    T,
    base_run,
    cli,
    copy_run,
    db,
    responses,
    scores,
    subset,
    tiny_config,
    write_prompts,
)

from persyn.config import load_config
from persyn.scoring.answers import answers_key

pytest.importorskip("persyn.engines.transformers_engine")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return base_run(tmp_path_factory)


def test_a_new_checker_rescores_only_answer_rows(tmp_path, base, monkeypatch):
    root = copy_run(base, tmp_path / "checker")
    run = root / "run"
    resp_before, before = responses(run), scores(run)
    auto_rows = {k for k in before if k[:2] == ("quality", answers_key("auto"))}
    assert auto_rows  # the base run checked answers with the default checker

    cfg = tiny_config(root, extra={"prompts.answer_checker": "numeric"})
    res = cli(["score", str(cfg)])
    assert res.exit_code == 2 and "prompts" in res.stderr  # a changed verdict rule is a config change
    spy = GenerateSpy(monkeypatch)
    res = cli(["score", str(cfg), "--force"])
    assert res.exit_code == 0, res.output

    assert spy.loads == {}  # judge and learnability rows were reused: no model was even loaded
    assert responses(run) == resp_before
    after = scores(run)
    assert {k: after[k] for k in before} == before  # every earlier row is still there, unchanged
    new = {k: v for k, v in after.items() if k not in before}
    assert {k[:2] for k in new} == {("quality", answers_key("numeric"))}
    # exactly the calibration responses the old checker had checked, one row each
    assert {k[2:] for k in new} == {k[2:] for k in auto_rows if k[4] in set(subset(run, "calibration"))}
    assert len(new) % T == 0 and all(v in (0.0, 1.0) for v in new.values())

    with db(run) as con:
        metas = [
            json.loads(m)
            for (m,) in con.execute("SELECT meta FROM scores WHERE scorer_key = ?", (answers_key("numeric"),))
        ]
    assert len(metas) == len(new)
    assert all(m["method"] in ("numeric", "none") and m["reason"] for m in metas)

    # Running it again does nothing new.
    res = cli(["score", str(cfg)])
    assert res.exit_code == 0, res.output
    assert scores(run) == after


def test_the_report_counts_labels_per_method(base):
    run = base / "run"
    html = (run / "report" / "index.html").read_text()
    section = re.sub(r">\s+<", "><", html[html.index('id="quality"') : html.index('id="router"')])
    cal = set(subset(run, "calibration"))
    got = scores(run)
    for key in {k[1] for k in got if k[0] == "quality" and k[4] in cal}:
        labels = sum(k[1] == key and k[4] in cal and v is not None for k, v in got.items())
        row = section[section.index(f'title="{key}"') :].split("</tr>")[0]
        assert f'<td class="num">{labels:,}</td>' in row, (key, row)
    assert f'title="{answers_key("auto")}">answers<' in section
    # The tiny judge was never measured: the report says so, and how to measure it.
    assert "not measured: run benchmarks/judge.py --judge zoo:tiny-llama-s5" in section


def test_the_time_limit_is_not_part_of_the_manifest(tmp_path):
    a = tiny_config(tmp_path, name="a.yaml")
    b = tiny_config(tmp_path, name="b.yaml", extra={"prompts.answer_timeout_s": 30})
    c = tiny_config(tmp_path, name="c.yaml", extra={"prompts.answer_checker": "math"})
    assert load_config(a).hash() == load_config(b).hash() != load_config(c).hash()


def test_a_measured_judge_shows_its_accuracy(base, monkeypatch):
    from persyn import Pipeline
    from persyn.stages import score as score_stage

    measured = {"accuracy": 0.8, "ci95": [0.72, 0.87], "n": 120, "template": "default"}
    monkeypatch.setattr("persyn.scoring.reliability.measured_accuracy", lambda spec: measured)
    with Pipeline.from_config(base / "persyn.yaml") as pipe:
        rows = {q["method"]: q for q in score_stage.quality_summary(pipe.ctx)}
    assert rows["judge"]["accuracy"] == 0.8
    assert rows["judge"]["reliability"] == (
        "pairwise accuracy 0.80 (95% CI 0.72-0.87) on 120 labelled pairs, template 'default'"
    )
    assert rows["answers"]["checker"] == "auto" and rows["answers"]["timeouts"] == 0
    assert rows["answers"]["labels"] + rows["answers"]["failed"] == rows["answers"]["prompts"] * T


def test_a_reference_guided_judge_has_its_own_key_for_prompts_with_answers(tmp_path):
    from persyn import Pipeline
    from persyn.scoring.quality import engine_scorer_key
    from persyn.stages.score import Scores
    from persyn.store import Prompt

    write_prompts(tmp_path / "prompts.jsonl")
    judge = {"quality.method": "judge"}
    off = tiny_config(tmp_path, name="a.yaml", extra={**judge, "quality.judge_reference": False})
    on = tiny_config(tmp_path, name="b.yaml", extra={**judge, "quality.judge_reference": True})
    # Off by default; at its default it stays out of the manifest (runs made before it keep their hash).
    assert load_config(off).hash() == load_config(tiny_config(tmp_path, name="c.yaml", extra=judge)).hash()
    assert load_config(on).hash() != load_config(off).hash()
    prompts = [Prompt("p1", "What is 2+2?", answer="4"), Prompt("p2", "Write a haiku.")]
    keys = {}
    for name, path in (("off", off), ("on", on)):
        with Pipeline.from_config(path, force=True) as pipe:
            fp = pipe.ctx.fingerprint(pipe.ctx.config.quality.engine)
            keys[name] = Scores(pipe.ctx).quality_keys(prompts)
    plain, guided = engine_scorer_key("judge", fp), engine_scorer_key("judge", fp, reference=True)
    assert keys["off"] == [plain, plain]
    assert keys["on"] == [guided, plain]  # only the prompt with an answer is judged against it
