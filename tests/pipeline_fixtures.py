"""Shared helpers for the pipeline tests (test_pipeline*.py, test_cli.py, test_crash.py,
test_strategies.py): a tiny-model config, a finished base run built once per test session, and
readers that compare store contents.

Tiny random Llamas (`zoo:tiny-llama-s{N}`, float32) play three teachers, the student and the judge;
prompts are the bundled demo set (math with answers -> answer matching; instructions -> the judge).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import yaml

# Sizes of the base run: N prompts, C calibration, T teachers.
N_MATH, N_INSTR = 12, 12
N = N_MATH + N_INSTR
C = 8
TEACHERS = ["t1", "t2", "t3"]
T = len(TEACHERS)


def write_prompts(path: Path, n_math: int = N_MATH, n_instructions: int = N_INSTR) -> Path:
    from persyn.demo import write_demo_prompts

    return write_demo_prompts(path, n_math=n_math, n_instructions=n_instructions, seed=0)


def tiny_config(
    root: Path,
    *,
    prompts: str = "prompts.jsonl",
    out: str = "run",
    student_seed: int = 4,
    calibration: int = C,
    selection: str = "diverse",
    batch_size: int = 4,
    extra: dict | None = None,
    name: str = "persyn.yaml",
) -> Path:
    """Write a config for tiny models into `root`; returns its path."""
    cfg = {
        "seed": 0,
        "prompts": {"path": prompts, "id_field": "id", "answer_field": "answer"},
        "student": {"model": f"zoo:tiny-llama-s{student_seed}", "dtype": "float32", "family": "a"},
        "teachers": [
            {"name": "t1", "model": "zoo:tiny-llama-s1", "dtype": "float32", "family": "a"},
            {"name": "t2", "model": "zoo:tiny-llama-s2", "dtype": "float32", "family": "b"},
            {"name": "t3", "model": "zoo:tiny-llama-s3", "dtype": "float32", "family": "a"},
        ],
        # Random tiny models never stop: every response is cut at 8 tokens. These tests are about
        # the pipeline's mechanics, so the row rules are off (test_rows.py tests them, on).
        "generation": {"max_new_tokens": 8, "regenerate_cut": {"enabled": False}},
        "quality": {"method": "auto", "judge": {"model": "zoo:tiny-llama-s5", "dtype": "float32"}},
        "calibration": {"size": calibration, "selection": selection},
        "router": {
            "max_epochs": 20,
            "patience": 5,
            "test_fraction": 0.25,
            "quality_floor": {"enabled": False},
        },
        "filters": {"enabled": False},
        "output": {"dir": out, "formats": ["messages", "prompt_completion", "sharegpt", "parquet", "hf"]},
        "executor": {"batch_size": batch_size},
    }
    for key, value in (extra or {}).items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    path = root / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli(args: list[str]):
    """Run the persyn CLI in-process; returns the click Result (stdout and stderr kept apart)."""
    from typer.testing import CliRunner

    from persyn.cli import app

    return CliRunner().invoke(app, args, catch_exceptions=False)


_BASE: dict = {}


def base_run(tmp_path_factory) -> Path:
    """A finished `persyn run` of the tiny config, built once per session; returns its root
    (holding persyn.yaml, prompts.jsonl and run/). Tests that change it work on `copy_run`."""
    key = id(tmp_path_factory)
    if key not in _BASE:
        root = tmp_path_factory.mktemp("base")
        write_prompts(root / "prompts.jsonl")
        cfg = tiny_config(root)
        res = cli(["run", str(cfg)])
        assert res.exit_code == 0, res.output
        _BASE[key] = (root, res.stdout)
    return _BASE[key][0]


def base_output(tmp_path_factory) -> str:
    base_run(tmp_path_factory)
    return _BASE[id(tmp_path_factory)][1]


def copy_run(base: Path, dest: Path) -> Path:
    """A copy of a finished run (config, prompts, run dir) to change without touching the base."""
    shutil.copytree(base, dest)
    return dest


# ------------------------------------------------------------------------------------------------
# reading a store the way a person comparing two runs would


def db(run_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{run_dir / 'store.sqlite'}?mode=ro", uri=True)


def responses(run_dir: Path) -> dict[tuple, tuple]:
    with db(run_dir) as con:
        rows = con.execute(
            "SELECT teacher, gen_key, prompt_id, status, text, prompt_tokens, completion_tokens, attempts "
            "FROM responses"
        ).fetchall()
    return {r[:3]: r[3:] for r in rows}


def scores(run_dir: Path) -> dict[tuple, float | None]:
    with db(run_dir) as con:
        rows = con.execute(
            "SELECT kind, scorer_key, teacher, gen_key, prompt_id, value FROM scores"
        ).fetchall()
    return {r[:5]: r[5] for r in rows}


def routes(run_dir: Path) -> dict[tuple, str]:
    with db(run_dir) as con:
        rows = con.execute("SELECT router_key, prompt_id, teacher FROM routes").fetchall()
    return {r[:2]: r[2] for r in rows}


def events(run_dir: Path, stage: str | None = None) -> list[dict]:
    with db(run_dir) as con:
        q = "SELECT stage, kind, message, counts FROM events"
        rows = con.execute(
            q + (" WHERE stage = ?" if stage else "") + " ORDER BY id", (stage,) if stage else ()
        )
        return [
            {"stage": s, "kind": k, "message": m, "counts": json.loads(c) if c else {}} for s, k, m, c in rows
        ]


def event_count(run_dir: Path) -> int:
    """How many events the store holds: pass it to `work_starts` to read one later run's events."""
    with db(run_dir) as con:
        return con.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def work_starts(run_dir: Path, stage: str, since: int = 0) -> dict[str, dict]:
    """The start/resume event of each unit (teacher) of `stage` among the events after the first
    `since`: what one run set out to do, by teacher. A teacher with no work logs no event."""
    evs = events(run_dir)[since:]
    return {e["counts"]["unit"]: e for e in evs if e["stage"] == stage and e["kind"] in ("start", "resume")}


def routed_teachers(run_dir: Path) -> set[str]:
    """The teachers the current routes send at least one prompt to."""
    key = (state(run_dir, "route") or {}).get("router_key")
    with db(run_dir) as con:
        q = "SELECT DISTINCT teacher FROM routes" + (" WHERE router_key = ?" if key else "")
        return {r[0] for r in con.execute(q, (key,) if key else ())}


def subset(run_dir: Path, name: str) -> list[str]:
    with db(run_dir) as con:
        return [
            r[0]
            for r in con.execute("SELECT prompt_id FROM subsets WHERE name = ? ORDER BY position", (name,))
        ]


def state(run_dir: Path, key: str):
    with db(run_dir) as con:
        row = con.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


class GenerateSpy:
    """Counts what the transformers engine is asked to do, by model: loads and generated prompts."""

    def __init__(self, monkeypatch):
        from persyn.engines.transformers_engine import TransformersEngine

        self.loads: dict[str, int] = {}
        self.generated: dict[str, int] = {}
        init, gen = TransformersEngine.__init__, TransformersEngine.generate
        spy = self

        def counting_init(engine, spec, *a, **kw):
            spy.loads[spec.model] = spy.loads.get(spec.model, 0) + 1
            return init(engine, spec, *a, **kw)

        def counting_generate(engine, prompts, params):
            spy.generated[engine.spec.model] = spy.generated.get(engine.spec.model, 0) + len(prompts)
            return gen(engine, prompts, params)

        monkeypatch.setattr(TransformersEngine, "__init__", counting_init)
        monkeypatch.setattr(TransformersEngine, "generate", counting_generate)

    @property
    def total_generated(self) -> int:
        return sum(self.generated.values())
