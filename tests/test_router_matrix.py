"""Bring your own calibration matrix: wide/long imports, bad rows, and `persyn router train|eval`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from synthetic_router import make_synthetic
from typer.testing import CliRunner

from persyn.cli import app
from persyn.router.io import read_router_config
from persyn.router.matrix import ScoreFileError, load_score_matrix
from persyn.router.model import prompt_hash

nan = np.nan


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")
    return path


def test_wide_jsonl_with_missing_scores_and_bad_rows(tmp_path):
    path = _write_jsonl(
        tmp_path / "wide.jsonl",
        [
            {"question": "q1", "scores": {"model-a": 0.8, "model-b": 0.1}},
            {"question": "q2", "scores": {"model-b": True, "model-c": 0}},  # a missing, bool ok
            "{broken json",
            {"question": "q3", "scores": {"model-a": "high"}},
            {"question": "", "scores": {"model-a": 1}},
            {"question": "q1", "scores": {"model-a": 0.0}},  # duplicate prompt
            {"question": "q4", "scores": {"model-a": None, "model-c": 0.5}},  # explicit null
            ["not", "an", "object"],
            "",
        ],
    )
    m = load_score_matrix(path)
    assert m.prompts == ["q1", "q2", "q4"]
    assert m.teachers == ["model-a", "model-b", "model-c"]
    np.testing.assert_array_equal(m.values, [[0.8, 0.1, nan], [nan, 1.0, 0.0], [nan, nan, 0.5]])
    lines = [(b.line, b.message) for b in m.bad_rows]
    assert [ln for ln, _ in lines] == [3, 4, 5, 6, 8]
    assert "not valid JSON" in lines[0][1]
    assert "'high' is not a number" in lines[1][1]
    assert "no prompt" in lines[2][1]
    assert "duplicate prompt (first on line 1)" in lines[3][1]
    assert "expected an object" in lines[4][1]
    assert str(m.bad_rows[0]).startswith(f"{path}:3: ")


def test_long_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "long.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "model_name", "performance"])
        w.writerows(
            [
                ["What is 2+2?", "gpt-x", "1"],
                ["What is 2+2?", "llama-y", "0"],
                ["Name a prime, please", "gpt-x", "0.5"],
                ["Name a prime, please", "gpt-x", "0.7"],  # duplicate cell
                ["Name a prime, please", "llama-y", "oops"],
                ["", "llama-y", "1"],
                ["Name a prime, please", "", "1"],
                ["Capital of France?", "llama-y", ""],
            ]
        )
    m = load_score_matrix(csv_path)
    assert m.prompts == ["What is 2+2?", "Name a prime, please"]
    assert m.teachers == ["gpt-x", "llama-y"]
    np.testing.assert_array_equal(m.values, [[1.0, 0.0], [0.5, nan]])
    assert [b.line for b in m.bad_rows] == [5, 6, 7, 8, 9]  # header is line 1
    assert "duplicate score for model 'gpt-x' (first on line 4)" in m.bad_rows[0].message

    jl = _write_jsonl(
        tmp_path / "long.jsonl",
        [
            {"query": "a", "model_name": "m1", "performance": 0.2},
            {"prompt": "a", "model": "m2", "score": 0.4},  # aliases
            {"query": "b", "model_name": "m1", "performance": 1.0},
            {"question": "c", "scores": {"m1": 1}},  # a wide row in a long file
        ],
    )
    m2 = load_score_matrix(jl)
    assert m2.teachers == ["m1", "m2"] and m2.prompts == ["a", "b"]
    assert len(m2.bad_rows) == 1 and "wide-format row in a long-format file" in m2.bad_rows[0].message


def test_unusable_files_are_refused(tmp_path):
    with pytest.raises(ScoreFileError, match="no such file"):
        load_score_matrix(tmp_path / "absent.jsonl")
    bad = _write_jsonl(tmp_path / "bad.jsonl", ["nope", {"question": "q", "scores": {"a": "x"}}])
    with pytest.raises(ScoreFileError, match="no usable rows; first problem: .*bad.jsonl:1"):
        load_score_matrix(bad)
    one = _write_jsonl(tmp_path / "one.jsonl", [{"question": "q", "scores": {"a": 1}}])
    with pytest.raises(ScoreFileError, match="at least two models"):
        load_score_matrix(one)
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([{"question": "q", "scores": {"a": 1, "b": 0}}, 5]))
    m = load_score_matrix(arr)
    assert m.prompts == ["q"] and m.bad_rows[0].line == 2


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def score_files(tmp_path_factory):
    """The same synthetic scores as a wide JSONL and a long CSV (with one malformed row each)."""
    d = make_synthetic(n_prompts=160, n_teachers=3, n_topics=3, seed=3)
    root = tmp_path_factory.mktemp("scores")
    wide = root / "wide.jsonl"
    with open(wide, "w") as f:
        for p, row in zip(d.prompts, d.quality, strict=True):
            f.write(
                json.dumps({"question": p, "scores": dict(zip(d.teachers, row.tolist(), strict=True))}) + "\n"
            )
        f.write('{"question": "half a row"\n')
    long = root / "long.csv"
    with open(long, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "model_name", "performance"])
        for p, row in zip(d.prompts, d.quality, strict=True):
            for t, v in zip(d.teachers, row, strict=True):
                w.writerow([p, t, repr(float(v))])
        w.writerow(["orphan", "strong", "n/a"])
    other = root / "other.jsonl"  # prompts the router never saw, same models
    d2 = make_synthetic(n_prompts=60, n_teachers=3, n_topics=3, seed=99)
    seen = set(d.prompts)
    with open(other, "w") as f:
        for p, row in zip(d2.prompts, d2.quality, strict=True):
            if p not in seen:
                f.write(
                    json.dumps({"question": p, "scores": dict(zip(d2.teachers, row.tolist(), strict=True))})
                )
                f.write("\n")
    return d, wide, long, other


NAMES = {"router", "random", "strongest", "knn", "oracle"}
KEYS = {"hit@1", "hit@3", "regret", "mean_score", "oracle_gain_recovered"}


def _run(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_cli_train_and_eval_wide(score_files, tmp_path):
    d, wide, _, other = score_files
    out = tmp_path / "router"
    res = _run(
        ["router", "train", "--scores", str(wide), "--out", str(out), "--seed", "1", "--test-size", "0.25"]
    )
    assert "wide.jsonl:161" in res.output  # the malformed row is reported with its line
    cfg = read_router_config(out)
    assert cfg["teachers"] == d.teachers and cfg["alpha"] == 0.0
    assert cfg["split"]["seed"] == 1 and len(cfg["split"]["test_prompts"]) == 40
    assert set(cfg["split"]["test_prompts"]).isdisjoint(cfg["train"]["seen_prompts"])
    assert len(cfg["train"]["seen_prompts"]) == 120
    assert (out / "calibration.jsonl").is_file()

    res = _run(["router", "eval", "--router", str(out), "--scores", str(wide), "--json"])
    payload = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert NAMES <= set(payload) and "mix" in payload
    for name, metrics in payload.items():
        assert KEYS <= set(metrics), name
        assert metrics["n"] == 40  # the held-out split, nothing the router trained on
    assert payload["oracle"]["hit@1"] == 1.0 and payload["oracle"]["regret"] == 0.0
    assert payload["router"]["hit@1"] > payload["strongest"]["hit@1"] + 0.3
    assert payload["router"]["regret"] < payload["random"]["regret"]

    table = _run(["router", "eval", "--router", str(out), "--scores", str(wide)]).stdout
    assert "held-out split" in table
    for name in NAMES | {"hit@1", "hit@3", "regret", "gain recovered"}:
        assert name in table

    # Another file: every prompt is new, so all of it is evaluated.
    res = _run(["router", "eval", "--router", str(out), "--scores", str(other), "--json"])
    n_other = sum(1 for _ in open(other))
    assert json.loads(res.stdout)["router"]["n"] == n_other


def test_cli_long_csv_matches_wide_split(score_files, tmp_path):
    d, wide, long, _ = score_files
    out = tmp_path / "router-long"
    _run(["router", "train", "--scores", str(long), "--out", str(out), "--seed", "1", "--test-size", "0.25"])
    cfg = read_router_config(out)
    # Same prompts and seed: the same held-out split, whatever the file layout.
    test_hashes = set(cfg["split"]["test_prompts"])
    assert len(test_hashes) == 40 and test_hashes <= {prompt_hash(p) for p in d.prompts}
    res = _run(["router", "eval", "--router", str(out), "--scores", str(long), "--json"])
    payload = json.loads(res.stdout)
    assert NAMES <= set(payload) and payload["router"]["n"] == 40


def test_cli_errors_are_clear(score_files, tmp_path):
    _, wide, _, _ = score_files
    out = tmp_path / "r"
    _run(["router", "train", "--scores", str(wide), "--out", str(out), "--max-epochs", "3"])
    other_models = _write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "scores": {"a": 1, "b": 0}}])
    res = CliRunner().invoke(app, ["router", "eval", "--router", str(out), "--scores", str(other_models)])
    assert res.exit_code == 2
    assert "['a', 'b']" in res.output and "'strong'" in res.output
    res = CliRunner().invoke(app, ["router", "eval", "--router", str(tmp_path), "--scores", str(wide)])
    assert res.exit_code == 2 and "not a router directory" in res.output
    res = CliRunner().invoke(
        app, ["router", "train", "--scores", str(tmp_path / "nope.jsonl"), "--out", str(out)]
    )
    assert res.exit_code == 2 and "no such file" in res.output
