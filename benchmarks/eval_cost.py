"""What evaluating a student costs per item, each way, measured side by side in one run: greedy answers,
the reference answer's log-likelihood, the judge's score and the two-order pairwise judgement.

    .venv/bin/python benchmarks/eval_cost.py                   # SmolLM2 student, Qwen judge, 32 items
    .venv/bin/python benchmarks/eval_cost.py --items 16 --max-new-tokens 128 256

Items: demo math problems (with answers) and bundled instructions. Seconds per item are wall time on
this machine, through `persyn.student.evaluate` and the transformers engine with its default spec.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/http.py shadows http


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default="zoo:smollm2-135m-instruct")
    ap.add_argument("--judge", default="zoo:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    from persyn.demo import generate_math_problems, load_instructions
    from persyn.engines import load_engine
    from persyn.engines.base import GenerationParams
    from persyn.engines.spec import EngineSpec
    from persyn.student.evaluate import DEFAULT_REFERENCE_TEMPLATE, win_scores
    from persyn.student.train import machine_name

    n = args.items
    math_items = generate_math_problems(n, seed=23)
    instr = [r["prompt"] for r in load_instructions()[:n]]
    student = load_engine(EngineSpec(model=args.student, batch_size=args.batch_size))
    print(f"machine: {machine_name()}; student {args.student} ({student.dtype}), {n} items", flush=True)

    def timed(what: str, fn, count: int):
        t = time.perf_counter()
        out = fn()
        s = time.perf_counter() - t
        print(f"{what:55s} {s / count:7.3f} s/item  ({s:6.1f} s for {count})", flush=True)
        return out

    answers = {}
    for m in args.max_new_tokens:
        params = GenerationParams(max_new_tokens=m)
        gens = timed(
            f"student greedy answer, math, max_new_tokens={m}",
            lambda params=params: student.generate([p.prompt for p in math_items], params),
            n,
        )
        print(f"{'':55s} mean {sum(g.completion_tokens for g in gens) / n:.0f} tokens")
        answers[m] = timed(
            f"student greedy answer, instructions, max_new_tokens={m}",
            lambda params=params: student.generate(instr, params),
            n,
        )
    refs = [DEFAULT_REFERENCE_TEMPLATE.format(answer=p.answer) for p in math_items]
    timed(
        "student loglik of the reference answer",
        lambda: student.loglik([p.prompt for p in math_items], refs),
        n,
    )
    student.close()

    judge = load_engine(EngineSpec(model=args.judge, batch_size=args.batch_size))
    texts = [g.text for g in answers[max(answers)]]
    timed("judge score (log P(Yes) - log P(No))", lambda: judge.score(instr, texts), n)
    # against the shorter budget's answers; identical pairs are ties the judge never sees
    other = [g.text for g in answers[min(answers)]]
    judged = sum(a.strip() != b.strip() for a, b in zip(texts, other, strict=True))
    timed(
        f"judge pairwise win, both orders (4 loglik passes; {judged} judged)",
        lambda: win_scores(judge, instr, texts, other, batch_size=args.batch_size),
        max(judged, 1),
    )
    judge.close()


if __name__ == "__main__":
    main()
