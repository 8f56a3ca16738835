"""How far an LM judge's labels can be trusted: its pairwise accuracy on a labelled set, measured.

The set (`data/judge_triples.jsonl`, shipped with the package) holds hand-written (prompt, good,
bad) triples over math, facts, code and instructions; the bad answer is plausible, not gibberish.
A judge is right on a triple when it scores the good answer above the bad one, which is exactly
what the router's labels need (they are compared within a prompt). `benchmarks/judge.py` measures
judges and writes their figures to `data/judge_accuracy.json`, keyed by `judge_id`: the model and
everything that changes how it renders the judging prompt. The report looks a run's judge up there.
Reading the labelled set and scoring judges on it is the benchmark's work: tests/judge_set.py.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

from persyn.engines.base import DEFAULT_JUDGE_TEMPLATE
from persyn.engines.spec import EngineSpec

ACCURACY_FILE = "judge_accuracy.json"


def judge_id(spec: EngineSpec) -> str:
    """The model plus a digest of what shapes its judging prompt (template, chat or completion
    format, system prompt): two judges with the same id score the same text the same way."""
    render = {
        "judge_template": spec.judge_template or DEFAULT_JUDGE_TEMPLATE,
        "template": spec.template,
        "completion_template": spec.completion_template if spec.template != "chat" else None,
        "system_prompt": spec.system_prompt,
    }
    digest = hashlib.sha256(json.dumps(render, sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec.model}#{digest}"


def load_measurements() -> dict[str, dict[str, Any]]:
    path = resources.files("persyn").joinpath("data", ACCURACY_FILE)
    return json.loads(path.read_text(encoding="utf-8")).get("judges", {}) if path.is_file() else {}


def measured_accuracy(spec: EngineSpec) -> dict[str, Any] | None:
    """The shipped measurement of this judge (accuracy, interval, n, ...), or None if never measured."""
    return load_measurements().get(judge_id(spec))
