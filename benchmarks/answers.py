"""Answer checking speed: the numeric path (in-process) and the math path (math-verify in worker processes).

    .venv/bin/python benchmarks/answers.py [--numeric 5000] [--math 500]

Numeric items are GSM8K-style ("... #### 42" against "42" or "43"); math items are MATH-style
(\\boxed{\\frac{a}{b}\\sqrt{a} + x^b} against the same value written in another order), so every one
goes through math-verify's parser and its symbolic comparison. The worker pool is started before
the math timing (its start-up, about a second, is paid once per process).
"""

from __future__ import annotations

import argparse
import os
import random
import time

from persyn.scoring.answers import AnswerChecker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--numeric", type=int, default=5000)
    ap.add_argument("--math", type=int, default=500)
    args = ap.parse_args()
    rng = random.Random(0)
    checker = AnswerChecker()

    numeric = [(f"The total is {n}.\n#### {n}", str(n + (rng.random() < 0.5))) for n in range(args.numeric)]
    t = time.perf_counter()
    verdicts = checker.check_many(*zip(*numeric, strict=True))
    dt = time.perf_counter() - t
    assert all(v.method == "numeric" for v in verdicts)
    print(f"numeric: {len(numeric):,} items in {dt:.2f} s ({len(numeric) / dt:,.0f} items/s)")

    checker.check("\\boxed{x}", "x")  # start the worker pool
    sizes = [(a, b) for a in range(2, 200) for b in range(2, 200)][: args.math]
    math_items = [
        (rf"\boxed{{\frac{{{a}}}{{{b}}}\sqrt{{{a}}} + x^{b}}}", rf"x^{b} + \sqrt{{{a}}}\frac{{{a}}}{{{b}}}")
        for a, b in sizes
    ]
    t = time.perf_counter()
    verdicts = checker.check_many(*zip(*math_items, strict=True))
    dt = time.perf_counter() - t
    print(
        f"math: {len(math_items):,} items in {dt:.2f} s ({len(math_items) / dt:,.0f} items/s, "
        f"{min(4, os.cpu_count() or 1)} workers); {sum(v.correct for v in verdicts)} equal, "
        f"{sum(v.timed_out for v in verdicts)} timed out"
    )


if __name__ == "__main__":
    main()
