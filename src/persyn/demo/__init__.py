"""The bundled demo prompt set: generated math word problems (with answers) and hand-written
general instructions, shipped inside the package so `make demo` needs no download.

    rows = demo_prompts(n_math=200, n_instructions=100, seed=0)
    write_demo_prompts("data/demo.jsonl", n_math=200, n_instructions=100, seed=0)
    # then: load_prompts(path, id_field="id", answer_field="answer")

Each row: {"id", "prompt", "answer" (str, or None for instructions), "category" ("math", or one of
writing / explanation / advice / coding / extraction), "difficulty" (1..5 for math, else None)}.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from persyn.atomic import atomic_write
from persyn.demo.math_problems import MathProblem, format_number, generate_math_problems

__all__ = [
    "INSTRUCTION_CATEGORIES",
    "MathProblem",
    "demo_prompts",
    "format_number",
    "generate_math_problems",
    "load_instructions",
    "write_demo_prompts",
]

INSTRUCTION_CATEGORIES = ("writing", "explanation", "advice", "coding", "extraction")


@lru_cache(maxsize=1)
def _instructions() -> tuple[dict[str, Any], ...]:
    text = resources.files("persyn.demo").joinpath("instructions.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def load_instructions() -> list[dict[str, Any]]:
    """The hand-written instructions: dicts with id, category, prompt (file order)."""
    return [dict(r) for r in _instructions()]


def demo_prompts(n_math: int = 200, n_instructions: int = 100, seed: int = 0) -> list[dict[str, Any]]:
    """`n_math` generated problems (difficulty levels in turn) and `n_instructions` instructions
    drawn without replacement, shuffled together; the same arguments give the same list."""
    pool = _instructions()
    if not 0 <= n_instructions <= len(pool):
        raise ValueError(f"n_instructions must be between 0 and {len(pool)} (the bundled instructions)")
    if n_math < 0:
        raise ValueError("n_math must be >= 0")
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = [
        {"id": p.id, "prompt": p.prompt, "answer": p.answer, "category": "math", "difficulty": p.difficulty}
        for p in generate_math_problems(n_math, seed=seed)
    ]
    for r in rng.sample(list(pool), n_instructions):
        rows.append(
            {
                "id": r["id"],
                "prompt": r["prompt"],
                "answer": None,
                "category": r["category"],
                "difficulty": None,
            }
        )
    rng.shuffle(rows)
    return rows


def write_demo_prompts(path: str | Path, n_math: int = 200, n_instructions: int = 100, seed: int = 0) -> Path:
    """Write `demo_prompts(...)` as JSONL (one object per line); returns the path."""
    lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in demo_prompts(n_math, n_instructions, seed))
    return atomic_write(path, lines)
