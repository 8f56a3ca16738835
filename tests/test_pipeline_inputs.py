"""Bad input through the pipeline: malformed rows refused with file:line (and nothing written),
--skip-bad-rows listing them in the run dir, duplicates merged and reported, empty prompts, prompts
over a model's context, and configs naming unknown keys or teachers."""

from __future__ import annotations

import json

import pytest
from pipeline_fixtures import cli, subset, tiny_config

pytest.importorskip("persyn.engines.transformers_engine")

LONG = "Summarise this text. " + " ".join(f"word{i}" for i in range(300))
ROWS = [
    '{"prompt": "What is 2 + 3?", "answer": "5"}',
    '{"prompt": "Write a haiku about rain."}',
    '{"prompt": "broken json", ',
    '{"prompt": "   "}',
    '{"prompt": "What is 2 + 3?", "answer": "5"}',
    json.dumps({"prompt": LONG}),
    '{"prompt": "Name three colours."}',
    '{"prompt": "What is 10 - 4?", "answer": "6"}',
    '{"prompt": "Give a synonym for fast."}',
]


@pytest.fixture
def messy(tmp_path):
    (tmp_path / "prompts.jsonl").write_text("\n".join(ROWS) + "\n")
    # The student reads at most 96 tokens (prompt 88 + 8 new): the long prompt cannot fit.
    cfg = tiny_config(
        tmp_path,
        calibration=4,
        selection="random",
        extra={"prompts.id_field": None, "student.max_model_len": 96},
    )
    return tmp_path, cfg


def test_malformed_rows_refused_with_file_and_line(messy):
    root, cfg = messy
    res = cli(["calibrate", str(cfg)])
    assert res.exit_code == 2
    err = " ".join(res.stderr.split())
    assert "prompts.jsonl: 2 malformed row(s)" in err
    assert "line 3: invalid JSON" in err
    assert "line 4: prompt field 'prompt' is empty" in err
    assert "--skip-bad-rows" in err or "skip_bad_rows" in err
    assert not (root / "run").exists()  # refused before the run directory was touched


def test_skip_bad_rows_lists_them_and_reports_duplicates_and_long_prompts(messy):
    root, cfg = messy
    res = cli(["calibrate", str(cfg), "--skip-bad-rows"])
    assert res.exit_code == 0, res.output
    folder = root / "run" / "prompts"
    bad = [json.loads(x) for x in (folder / "bad_rows.jsonl").read_text().splitlines()]
    assert [(b["line"], b["kind"]) for b in bad] == [(3, "json"), (4, "empty_prompt")]
    assert all(b["file"].endswith("prompts.jsonl") for b in bad)
    dups = [json.loads(x) for x in (folder / "duplicates.jsonl").read_text().splitlines()]
    assert [(d["kept_line"], d["duplicate_lines"]) for d in dups] == [(1, [5])]
    long = [json.loads(x) for x in (folder / "too_long.jsonl").read_text().splitlines()]
    assert len(long) == 1 and long[0]["limit_name"] == "student" and long[0]["tokens"] > long[0]["max_tokens"]
    assert long[0]["source"].endswith("prompts.jsonl:6")
    report = json.loads((folder / "load_report.json").read_text())
    assert report["prompts"] == 6 and report["duplicate_rows"] == 1 and len(report["bad_rows"]) == 2
    assert report["length_check"]["excluded"] == 1
    # The working set: 9 rows - 2 bad - 1 duplicate - 1 too long.
    working = subset(root / "run", "prompts")
    assert len(working) == 5 and long[0]["id"] not in working
    assert len(subset(root / "run", "calibration")) == 4
    assert "2 bad rows skipped" in res.stderr and "1 duplicate rows merged" in res.stderr
    assert "1 over a model's context left out" in res.stderr


def test_config_with_unknown_key_or_teacher_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, extra={"routing.caps": {"t9": {"max_share": 0.5}}})
    res = cli(["run", str(cfg)])
    assert res.exit_code == 2
    assert "routing.caps.t9: unknown teacher 't9'" in res.stderr and "line" in res.stderr
    cfg = tiny_config(tmp_path, extra={"baselines.mix_weak": "t9"})
    res = cli(["plan", str(cfg)])
    assert res.exit_code == 2 and "baselines.mix_weak" in res.stderr
    cfg = tiny_config(tmp_path, extra={"calibration.sise": 3})
    res = cli(["calibrate", str(cfg)])
    assert res.exit_code == 2 and "unknown key 'calibration.sise'" in res.stderr and "'size'" in res.stderr
    assert not (tmp_path / "run").exists()
