"""Math word problems with exact, verifiable answers, from a seeded generator.

    problems = generate_math_problems(10_000, seed=0)
    problems[0].prompt, problems[0].answer, problems[0].difficulty, problems[0].expression

Five levels of difficulty:
  1  one step: add, subtract, multiply, divide, repeated amounts
  2  two steps: change from a bill, sharing out, wages plus bonus, seats, packing
  3  fractions, percentages, averages, minutes to hours
  4  rates and ratios: proportional distance, average speed over two legs, ratio shares,
     two pumps working together, successive percentage changes, unit prices
  5  several steps mixing percentages, rates, fractions and units: discount then tax, a leaking
     tank, scaling a recipe, simple interest over months, mixed-unit trips, a budget split

The templates are in `math_templates` (the words they use in `math_vocabulary`). Every template
computes its answer with exact rational arithmetic (`fractions.Fraction`) and records, separately,
an arithmetic `expression` over the numbers in the text; the tests evaluate that expression
independently and compare. Answers are integers or decimals with at most two
places (templates resample their numbers until that holds), never negative. Problems are distinct
(by text), and the same seed always gives the same list.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from persyn.demo.math_templates import TEMPLATES, _clean, format_number
from persyn.prompts import text_id

__all__ = ["MathProblem", "format_number", "generate_math_problems"]


@dataclass(frozen=True)
class MathProblem:
    id: str
    prompt: str
    answer: str  # "42", "12.5", "0.75"
    difficulty: int  # 1..5
    template: str  # "L3.discount"
    expression: str  # e.g. "(48 - 48 * 3 / 8)": evaluates exactly to the answer


def generate_math_problems(
    n: int, seed: int = 0, levels: Sequence[int] = (1, 2, 3, 4, 5)
) -> list[MathProblem]:
    """`n` distinct problems, levels taken in turn (1, 2, 3, 4, 5, 1, ...), templates and numbers
    drawn from `random.Random(seed)`. Deterministic for a given (n, seed, levels)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    bad = [lv for lv in levels if lv not in TEMPLATES]
    if bad or not levels:
        raise ValueError(f"levels must be among {sorted(TEMPLATES)}, got {list(levels)}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[MathProblem] = []
    for i in range(n):
        level = levels[i % len(levels)]
        problem = None
        for _ in range(100):
            # Template first, then numbers until they fit: keeps templates equally likely even
            # though some reject more draws (unclean answers) than others.
            name, template = rng.choice(TEMPLATES[level])
            for _ in range(200):
                draft = template(rng)
                if draft is not None and draft.text not in seen and _clean(draft.answer):
                    problem = MathProblem(
                        f"math-{text_id(draft.text)[:12]}",
                        draft.text,
                        format_number(draft.answer),
                        level,
                        name,
                        draft.expression,
                    )
                    break
            if problem is not None:
                break
        if problem is None:  # pragma: no cover - the templates hold far more than any sensible n
            raise RuntimeError(
                f"could not draw a new level-{level} problem (n={n} too large for the templates?)"
            )
        seen.add(problem.prompt)
        out.append(problem)
    return out
