"""The run config: the starter template validates, errors name the key and the line, cross-section
checks (caps, mix, budget) name unknown teachers, overrides, and what the manifest hashes."""

from __future__ import annotations

import textwrap
from importlib import resources
from pathlib import Path

import pytest

from persyn.config import Config, ConfigError, load_config, parse_overrides

BASE = """\
prompts: {path: data/prompts.jsonl, answer_field: answer}
student: {model: zoo:tiny-llama-s4}
teachers:
  - {name: a, model: zoo:tiny-llama-s1}
  - {name: b, model: zoo:tiny-llama-s2}
quality: {judge: {model: zoo:tiny-llama-s5}}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text))
    return str(exc.value)


def test_starter_template_validates(tmp_path):
    text = resources.files("persyn").joinpath("templates", "config.yaml").read_text()
    cfg = load_config(write(tmp_path, text))
    assert cfg.teacher_names == ["qwen", "gemma", "smollm"]
    assert cfg.teacher("gemma").template == "completion"
    assert cfg.generation_for("gemma").stop == ["\nQuestion:"]
    assert cfg.calibration.selection == "diverse"
    # Every section of the schema appears in the template, so the template documents every key.
    for section in Config.model_fields:
        assert f"\n{section}:" in "\n" + text, section


def test_relative_paths_are_relative_to_the_file(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.prompts.path == (tmp_path / "data" / "prompts.jsonl").resolve()
    assert cfg.output.dir == (tmp_path / "runs" / "persyn").resolve()


def test_unknown_key_names_key_line_and_suggests(tmp_path):
    msg = error(tmp_path, BASE + "router: {alpah: 0.3}\n")
    assert "line 7" in msg and "router.alpah" in msg and "did you mean 'alpha'" in msg


def test_unknown_top_level_section(tmp_path):
    msg = error(tmp_path, BASE + "routeing: {}\n")
    assert "line 7" in msg and "unknown key 'routeing'" in msg and "'routing'" in msg


def test_missing_required_key(tmp_path):
    msg = error(tmp_path, BASE.replace("student: {model: zoo:tiny-llama-s4}\n", ""))
    assert "missing required key 'student'" in msg


def test_bad_value_names_the_key(tmp_path):
    msg = error(tmp_path, BASE + "router: {alpha: 1.5}\n")
    assert "line 7" in msg and "router.alpha" in msg and "less than or equal to 1" in msg


def test_caps_naming_an_unknown_teacher(tmp_path):
    msg = error(tmp_path, BASE + "routing:\n  caps:\n    c: {max_share: 0.5}\n")
    assert (
        "line 9" in msg and "routing.caps.c" in msg and "unknown teacher 'c'" in msg and "['a', 'b']" in msg
    )


def test_mix_naming_an_unknown_teacher(tmp_path):
    msg = error(tmp_path, BASE + "baselines: {mix_weak: zz}\n")
    assert "line 7" in msg and "baselines.mix_weak" in msg and "unknown teacher 'zz'" in msg


def test_budget_and_cost_caps_need_prices(tmp_path):
    msg = error(tmp_path, BASE + "routing:\n  budget: 10\n  caps: {a: {max_cost: 3}}\n")
    assert "routing.budget" in msg and "missing: ['a', 'b']" in msg
    assert "routing.caps.a.max_cost" in msg and "cost_per_1k_tokens" in msg
    priced = BASE.replace(
        "zoo:tiny-llama-s1}", "zoo:tiny-llama-s1, cost_per_1k_tokens: {input: 1, output: 2}}"
    ).replace("zoo:tiny-llama-s2}", "zoo:tiny-llama-s2, cost_per_1k_tokens: {input: 1, output: 2}}")
    cfg = load_config(write(tmp_path, priced + "routing:\n  budget: 10\n  caps: {a: {max_cost: 3}}\n"))
    assert cfg.routing.budget == 10


def test_duplicate_teacher_and_quality_without_a_model(tmp_path):
    msg = error(tmp_path, BASE.replace("{name: b,", "{name: a,"))
    assert "teacher name 'a' is used twice" in msg
    msg = error(
        tmp_path,
        BASE.replace("answer_field: answer", "prompt_field: prompt").replace(
            "quality: {judge: {model: zoo:tiny-llama-s5}}", "quality: {method: judge}"
        ),
    )
    assert "line 6" in msg and "quality.judge" in msg
    msg = error(
        tmp_path,
        BASE.replace("answer_field: answer", "prompt_field: prompt").replace(
            "quality: {judge: {model: zoo:tiny-llama-s5}}", "quality: {method: auto}"
        ),
    )
    assert "quality.method" in msg and "judge" in msg


def test_openai_teacher_needs_base_url(tmp_path):
    msg = error(
        tmp_path, BASE.replace("{name: b, model: zoo:tiny-llama-s2}", "{name: b, model: x, engine: openai}")
    )
    assert "line 5" in msg and "teachers[1].base_url" in msg


def test_overrides(tmp_path):
    ov = parse_overrides(["calibration.size=64", "teachers.1.batch_size=4", "router.alpha=0.25"])
    assert ov == {"calibration.size": 64, "teachers.1.batch_size": 4, "router.alpha": 0.25}
    cfg = load_config(write(tmp_path, BASE), ov)
    assert cfg.calibration.size == 64 and cfg.teachers[1].batch_size == 4 and cfg.router.alpha == 0.25
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_overrides(["calibration.size"])
    with pytest.raises(ConfigError, match="calibration.sise"):
        load_config(write(tmp_path, BASE), {"calibration.sise": 3})


def test_manifest_covers_what_changes_results(tmp_path):
    a = load_config(write(tmp_path, BASE))
    b = load_config(
        write(tmp_path, BASE + "output: {dir: elsewhere, formats: [parquet]}\nexecutor: {batch_size: 3}\n"),
        {"prompts.skip_bad_rows": True},
    )
    assert a.hash() != "" and a.manifest_dict()["prompts"] == {
        **b.manifest_dict()["prompts"],
        "path": a.manifest_dict()["prompts"]["path"],
    }
    assert "output" not in a.manifest_dict() and "executor" not in a.manifest_dict()
    c = load_config(write(tmp_path, BASE.replace("tiny-llama-s4", "tiny-llama-s6")))
    assert c.hash() != a.hash()
    assert c.teacher_spec("a") == a.teacher_spec("a")  # the engine part only (no name, family...)
    assert not hasattr(c.teacher_spec("a"), "name")


def test_unreadable_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [b\n"))
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(write(tmp_path, "- a\n"))
