"""The bundled demo prompt set: generated math word problems (with answers) and hand-written
general instructions, shipped inside the package so `make demo` needs no download.

    rows = demo_prompts(n_math=200, n_instructions=100, seed=0)
    write_demo_prompts("data/demo.jsonl", n_math=200, n_instructions=100, seed=0)
    # then: load_prompts(path, id_field="id", answer_field="answer")
    held_out = demo_eval_prompts(n_math=100, n_instructions=16, exclude=[r["prompt"] for r in rows])

Each row: {"id", "prompt", "answer" (str, or None for instructions), "category" ("math", or one of
writing / explanation / advice / coding / extraction), "difficulty" (1..5 for math, else None)}.

Held-out evaluation sets never meet the training side: the last `EVAL_RESERVE_PER_CATEGORY`
instructions of each category (file order) are kept for evaluation and `demo_prompts` never draws
them; held-out math comes from the same generator with another seed, less any problem whose
normalised text is a training prompt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from persyn.demo.math_problems import MathProblem, format_number, generate_math_problems
from persyn.prompts import normalise_text
from persyn.util.atomic import atomic_write

__all__ = [
    "EVAL_RESERVE_PER_CATEGORY",
    "INSTRUCTION_CATEGORIES",
    "MathProblem",
    "demo_eval_prompts",
    "demo_prompts",
    "fewshot_template",
    "format_number",
    "generate_math_problems",
    "load_instructions",
    "split_instructions",
    "write_demo_prompts",
    "write_jsonl",
]

INSTRUCTION_CATEGORIES = ("writing", "explanation", "advice", "coding", "extraction")
# Instructions per category kept out of training for the held-out set (40 in all).
EVAL_RESERVE_PER_CATEGORY = 8
LEVELS = (1, 2, 3, 4, 5)


@lru_cache(maxsize=1)
def _instructions() -> tuple[dict[str, Any], ...]:
    text = resources.files("persyn.demo").joinpath("instructions.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def load_instructions() -> list[dict[str, Any]]:
    """The hand-written instructions: dicts with id, category, prompt (file order)."""
    return [dict(r) for r in _instructions()]


def split_instructions() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training pool, held-out pool): the held-out pool is the last `EVAL_RESERVE_PER_CATEGORY`
    instructions of each category, in category order; the training pool is all the others."""
    train: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for cat in INSTRUCTION_CATEGORIES:
        rows = [dict(r) for r in _instructions() if r["category"] == cat]
        train += rows[:-EVAL_RESERVE_PER_CATEGORY]
        held += rows[-EVAL_RESERVE_PER_CATEGORY:]
    return train, held


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "prompt": r["prompt"],
        "answer": None,
        "category": r["category"],
        "difficulty": None,
    }


def _math_row(p: MathProblem) -> dict[str, Any]:
    return {
        "id": p.id,
        "prompt": p.prompt,
        "answer": p.answer,
        "category": "math",
        "difficulty": p.difficulty,
    }


def demo_prompts(n_math: int = 200, n_instructions: int = 100, seed: int = 0) -> list[dict[str, Any]]:
    """`n_math` generated problems (difficulty levels in turn) and `n_instructions` instructions
    drawn without replacement from the training pool (`split_instructions`), shuffled together;
    the same arguments give the same list."""
    pool, _ = split_instructions()
    if not 0 <= n_instructions <= len(pool):
        raise ValueError(
            f"n_instructions must be between 0 and {len(pool)} (the bundled instructions, less the "
            "held-out ones)"
        )
    if n_math < 0:
        raise ValueError("n_math must be >= 0")
    rng = random.Random(seed)
    rows = [_math_row(p) for p in generate_math_problems(n_math, seed=seed)]
    rows += [_row(r) for r in rng.sample(pool, n_instructions)]
    rng.shuffle(rows)
    return rows


def demo_eval_prompts(
    n_math: int = 100, n_instructions: int = 16, seed: int = 1, exclude: Iterable[str] = ()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Held-out (math rows, instruction rows), in the row format of `demo_prompts`.

    Math: problems of the same generator with `seed` (use another than the training prompts'),
    none whose normalised text is in `exclude`, balanced over levels 1-5 and listed with the levels
    in turn, so that any prefix (an eval set's `answer_limit`) is balanced too. Instructions: from
    the held-out pool, categories in turn."""
    _, held = split_instructions()
    if not 0 <= n_instructions <= len(held):
        raise ValueError(f"n_instructions must be between 0 and {len(held)} (the held-out instructions)")
    if n_math < 0:
        raise ValueError("n_math must be >= 0")
    skip = {normalise_text(t) for t in exclude}
    per_level: list[list[MathProblem]] = []
    for i, level in enumerate(LEVELS):
        want = n_math // len(LEVELS) + (i < n_math % len(LEVELS))
        n = want
        while True:  # a longer draw is the shorter one plus more (the generator's prefix rule)
            kept = [
                p
                for p in generate_math_problems(n, seed=seed, levels=(level,))
                if normalise_text(p.prompt) not in skip
            ]
            if len(kept) >= want:
                break
            n += want
        per_level.append(kept[:want])
    math_rows = [
        _math_row(ps[k])
        for k in range(max(map(len, per_level), default=0))
        for ps in per_level
        if k < len(ps)
    ]
    by_cat = [[r for r in held if r["category"] == c] for c in INSTRUCTION_CATEGORIES]
    in_turn = [rows[k] for k in range(EVAL_RESERVE_PER_CATEGORY) for rows in by_cat]
    return math_rows, [_row(r) for r in in_turn[:n_instructions]]


def fewshot_template(n_shots: int = 3, seed: int = 99) -> str:
    """A completion template (`{prompt}` where the question goes) for a base model: `n_shots`
    worked examples from the math generator (levels 1-3, a seed no demo prompt uses), the
    arithmetic written out and then "The answer is N.". Literal braces are doubled for `format`."""
    shots = generate_math_problems(n_shots, seed=seed, levels=(1, 2, 3))
    body = "".join(
        f"Question: {p.prompt}\nAnswer: {p.expression} = {p.answer}. The answer is {p.answer}.\n\n"
        for p in shots
    )
    return body.replace("{", "{{").replace("}", "}}") + "Question: {prompt}\nAnswer:"


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL (one object per line, atomically); returns the path."""
    return atomic_write(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_demo_prompts(path: str | Path, n_math: int = 200, n_instructions: int = 100, seed: int = 0) -> Path:
    """Write `demo_prompts(...)` as JSONL (one object per line); returns the path."""
    return write_jsonl(path, demo_prompts(n_math, n_instructions, seed))
