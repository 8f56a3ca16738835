"""The demo project: its config (a teacher pool without the student, train and eval sections) and
its held-out eval files (disjoint from the training prompts, balanced)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from persyn.config import load_config
from persyn.demo import (
    EVAL_RESERVE_PER_CATEGORY,
    INSTRUCTION_CATEGORIES,
    demo_eval_prompts,
    demo_prompts,
    fewshot_template,
    load_instructions,
    split_instructions,
)
from persyn.demo.project import CONCISE_SYSTEM_PROMPT, DemoSettingsError, write_demo
from persyn.engines.rendering import check_template
from persyn.prompts import load_prompts, normalise_text
from persyn.store.store import RunStore


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg_path = write_demo(tmp_path_factory.mktemp("demo"))
    return cfg_path, load_config(cfg_path)


def test_config_pool_without_the_student(demo):
    _, cfg = demo
    assert cfg.student.model == "zoo:smollm2-135m-instruct" and cfg.student.family == "smollm"
    teachers = {t.name: t for t in cfg.teachers}
    assert list(teachers) == ["qwen", "qwen-concise", "gemma-fewshot"]
    student = (cfg.student.model, cfg.student.system_prompt, cfg.student.template)
    assert all((t.model, t.system_prompt, t.template) != student for t in cfg.teachers)
    assert all(t.family != cfg.student.family for t in cfg.teachers)
    # Distinct teachers as the config declares them, though two share a model.
    assert len({t.engine_spec().model_dump_json() for t in cfg.teachers}) == 3
    assert teachers["qwen-concise"].system_prompt == CONCISE_SYSTEM_PROMPT
    gemma = teachers["gemma-fewshot"]
    assert gemma.template == "completion" and gemma.generation.stop == ["\nQuestion:"]
    # The YAML literal block gives back the template exactly, and it formats.
    assert gemma.completion_template == fewshot_template()
    check_template(gemma.completion_template, ("prompt",), "completion_template")
    filled = gemma.completion_template.format(prompt="What is 2 + 3?")
    assert filled.count("Question:") == 4 and filled.endswith("Question: What is 2 + 3?\nAnswer:")
    assert "The answer is" in filled


def test_config_train_and_eval_sections(demo):
    cfg_path, cfg = demo
    assert cfg.train.epochs == 1 and cfg.train.lora is not None and cfg.train.lora.r == 16
    sets = {s.name: s for s in cfg.eval.sets}
    assert set(sets) == {"math", "instructions"}
    assert sets["math"].answer_field == "answer" and sets["math"].answer_limit == 48
    assert sets["instructions"].answer_field is None
    assert cfg.eval.max_new_tokens == 96
    assert all(s.path.parent == cfg_path.parent and s.path.is_file() for s in sets.values())


def test_eval_files_held_out_and_balanced(demo):
    cfg_path, cfg = demo
    train = _rows(cfg.prompts.path)
    assert len(train) == 160 and Counter(r["category"] == "math" for r in train) == {True: 80, False: 80}
    math = _rows(cfg_path.parent / "eval-math-100.jsonl")
    instr = _rows(cfg_path.parent / "eval-instructions-16.jsonl")
    assert len(math) == 100 and len(instr) == 16
    seen = {normalise_text(r["prompt"]) for r in train}
    assert not seen & {normalise_text(r["prompt"]) for r in math + instr}
    assert not {r["id"] for r in train} & {r["id"] for r in math + instr}
    assert Counter(r["difficulty"] for r in math) == {lv: 20 for lv in range(1, 6)}
    # Levels in turn, so the answered prefix (answer_limit) is balanced too.
    assert [r["difficulty"] for r in math[:10]] == [1, 2, 3, 4, 5] * 2
    assert all(r["answer"] for r in math) and all(r["answer"] is None for r in instr)
    assert Counter(r["category"] for r in instr) == {
        c: 16 // 5 + (i < 16 % 5) for i, c in enumerate(INSTRUCTION_CATEGORIES)
    }
    for path, with_answers in (("eval-math-100.jsonl", 100), ("eval-instructions-16.jsonl", 0)):
        ps = load_prompts(cfg_path.parent / path, id_field="id", answer_field="answer")
        assert len(ps) == len(_rows(cfg_path.parent / path)) and ps.report.n_with_answer == with_answers
        assert not ps.report.bad_rows and not ps.report.duplicates


def test_instruction_split_never_meets():
    train, held = split_instructions()
    assert len(held) == EVAL_RESERVE_PER_CATEGORY * len(INSTRUCTION_CATEGORIES)
    assert len(train) + len(held) == len(load_instructions())
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    # Every training draw, whatever its size, comes from the training pool only.
    held_ids = {r["id"] for r in held}
    assert not held_ids & {r["id"] for r in demo_prompts(n_math=0, n_instructions=len(train), seed=5)}
    with pytest.raises(ValueError, match="n_instructions must be between 0 and"):
        demo_prompts(n_math=0, n_instructions=len(train) + 1)
    with pytest.raises(ValueError, match="held-out instructions"):
        demo_eval_prompts(n_math=0, n_instructions=len(held) + 1)


def test_eval_math_drops_training_problems():
    # With the training seed itself, every candidate collides: the held-out draw must skip them all.
    train = demo_prompts(n_math=50, n_instructions=0, seed=1)
    math, _ = demo_eval_prompts(n_math=50, n_instructions=0, seed=1, exclude=[r["prompt"] for r in train])
    assert len(math) == 50 and Counter(r["difficulty"] for r in math) == {lv: 10 for lv in range(1, 6)}
    assert not {normalise_text(r["prompt"]) for r in train} & {normalise_text(r["prompt"]) for r in math}
    again, _ = demo_eval_prompts(n_math=50, n_instructions=0, seed=1, exclude=[r["prompt"] for r in train])
    assert again == math


def test_reproduction_sizes(tmp_path):
    cfg_path = write_demo(
        tmp_path,
        n_prompts=160,
        n_instructions=40,
        calibration=48,
        max_new_tokens=256,
        eval_math=200,
        eval_answer_limit=60,
        eval_instructions=24,
    )
    cfg = load_config(cfg_path)
    train = _rows(cfg.prompts.path)
    assert Counter(r["difficulty"] for r in train if r["category"] == "math") == {
        lv: 24 for lv in range(1, 6)
    }
    assert sum(r["category"] != "math" for r in train) == 40
    assert cfg.generation.max_new_tokens == 256 and cfg.eval.max_new_tokens == 256
    assert {s.name: s.answer_limit for s in cfg.eval.sets} == {"math": 60, "instructions": None}
    assert (
        len(_rows(tmp_path / "eval-math-200.jsonl")) == 200
        and len(_rows(tmp_path / "eval-instructions-24.jsonl")) == 24
    )


def test_other_settings_refused_once_a_run_exists(tmp_path):
    write_demo(tmp_path, n_prompts=16, calibration=8)
    assert write_demo(tmp_path, n_prompts=16, calibration=8)  # same settings: fine
    RunStore.open(tmp_path).close()
    with pytest.raises(DemoSettingsError, match="other settings"):
        write_demo(tmp_path, n_prompts=16, calibration=8, eval_instructions=8)
    with pytest.raises(ValueError, match="eval_answer_limit"):
        write_demo(tmp_path / "b", n_prompts=16, calibration=8, eval_math=10, eval_answer_limit=11)


# --------------------------------------------------------------------------------------------------
# `persyn demo`: short-answer prompts, and the number of prompts from the measured speed


def test_short_answer_draw_is_level_1_2_math_and_extraction(tmp_path):
    from persyn.demo.project import SHORT_ANSWER_CATEGORIES, SHORT_ANSWER_LEVELS

    cfg_path = write_demo(
        tmp_path,
        n_prompts=40,
        calibration=12,
        max_new_tokens=512,
        math_levels=SHORT_ANSWER_LEVELS,
        instruction_categories=SHORT_ANSWER_CATEGORIES,
    )
    cfg = load_config(cfg_path)
    rows = _rows(cfg.prompts.path)
    assert cfg.prompts.path.name == "prompts-20m20i-L12-extraction.jsonl"  # tells the draw apart
    assert Counter(r["category"] for r in rows) == {"math": 20, "extraction": 20}
    assert Counter(r["difficulty"] for r in rows if r["category"] == "math") == {1: 10, 2: 10}
    assert cfg.generation.max_new_tokens == 512
    held = {r["id"] for r in split_instructions()[1]}
    assert not held & {r["id"] for r in rows}
    # More prompts than the extraction pool holds: the rest is math.
    many = write_demo(
        tmp_path / "many", n_prompts=80, calibration=20, instruction_categories=SHORT_ANSWER_CATEGORIES
    )
    rows = _rows(load_config(many).prompts.path)
    assert sum(r["category"] == "extraction" for r in rows) == 24 and len(rows) == 80


def test_size_grows_with_the_measured_speed_and_never_shortens_answers():
    from persyn.demo.sizing import (
        MAX_NEW_TOKENS,
        MAX_PROMPTS,
        MIN_PROMPTS,
        PLANNED_SHARE,
        Speed,
        predicted_seconds,
        size_for,
    )

    sizes = [
        size_for(Speed(g, "float32", 2), budget_s=400, instruction_pool=24) for g in (1, 100, 200, 400, 1e5)
    ]
    assert [s.prompts for s in sizes] == sorted(s.prompts for s in sizes)
    assert sizes[0].prompts == MIN_PROMPTS and "slower than the budget" in sizes[0].why
    assert sizes[-1].prompts == MAX_PROMPTS
    assert all(s.max_new_tokens == MAX_NEW_TOKENS == 512 for s in sizes)
    for s, g in zip(sizes[1:-1], (100, 200, 400), strict=True):
        speed = Speed(g, "float32", 2)
        planned = 400 * PLANNED_SHARE  # a margin for the cost model's error
        fits, next_up = predicted_seconds(s.prompts, speed, 24), predicted_seconds(s.prompts + 4, speed, 24)
        assert fits <= planned < next_up
        assert s.calibration >= 8 and s.calibration < s.prompts
        assert f"{g} GFLOP/s" in s.why


def test_demo_sizes_once_and_a_rerun_resumes_that_size(tmp_path, monkeypatch):
    from pipeline_fixtures import cli

    import persyn.cli.commands as commands
    import persyn.zoo
    from persyn.demo import sizing

    measured, converted, runs = [], [], []
    monkeypatch.setattr(persyn.zoo, "ensure", converted.append)
    monkeypatch.setattr(
        sizing, "measure_speed", lambda: measured.append(1) or sizing.Speed(60.0, "float32", 2)
    )
    monkeypatch.setattr(commands, "_run_stage", lambda cfg, *a, **k: runs.append(cfg))
    monkeypatch.setattr(commands, "print_summary", lambda summary: None)
    out = tmp_path / "demo"
    res = cli(["demo", "--dir", str(out)])
    assert res.exit_code == 0, res.output
    first = sizing.load_size(out)
    assert first is not None and first.max_new_tokens == 512 and "GFLOP/s measured" in first.why
    assert sorted(converted) == sorted(
        ["zoo:qwen2.5-coder-0.5b-instruct", "zoo:gemma3-270m", "zoo:smollm2-135m-instruct"]
    )
    assert f"demo: {first.prompts} prompts, {first.calibration} calibration, 512 new tokens" in res.stderr
    cfg = load_config(runs[0])
    assert len(_rows(cfg.prompts.path)) == first.prompts and cfg.calibration.size == first.calibration
    RunStore.open(out).close()  # a run exists now
    monkeypatch.setattr(sizing, "measure_speed", lambda: sizing.Speed(1e5, "float32", 2))  # much faster now
    res = cli(["demo", "--dir", str(out)])
    assert res.exit_code == 0, res.output
    assert sizing.load_size(out) == first and len(measured) == 1 and runs[1] == runs[0]
    assert "as first sized in" in res.stderr


def test_demo_with_a_number_of_prompts_measures_nothing(tmp_path, monkeypatch):
    from pipeline_fixtures import cli

    import persyn.cli.commands as commands
    from persyn.demo import sizing

    def never():
        raise AssertionError("measured although the prompts were given")

    monkeypatch.setattr(sizing, "measure_speed", never)
    monkeypatch.setattr(commands, "_run_stage", lambda cfg, *a, **k: cfg)
    monkeypatch.setattr(commands, "print_summary", lambda summary: None)
    res = cli(["demo", "--dir", str(tmp_path / "d"), "--prompts", "12"])
    assert res.exit_code == 0, res.output
    assert sizing.load_size(tmp_path / "d") == sizing.DemoSize(12, 8, 512, "set by options")
    assert "demo: 12 prompts, 8 calibration, 512 new tokens (set by options)" in res.stderr


def test_a_missing_size_file_is_no_size_and_a_damaged_one_an_error(tmp_path):
    from persyn.demo import sizing

    assert sizing.load_size(tmp_path) is None
    (tmp_path / sizing.SIZE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        sizing.load_size(tmp_path)
