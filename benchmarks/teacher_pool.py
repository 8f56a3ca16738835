"""How often each candidate teacher gets the demo's math right, per difficulty and generation length:
the measurement that chooses a teacher pool where routing has something to decide.

    .venv/bin/python benchmarks/teacher_pool.py                       # 20 problems per level, 256 tokens
    .venv/bin/python benchmarks/teacher_pool.py --per-level 8 --only qwen-concise gemma-fewshot
    .venv/bin/python benchmarks/teacher_pool.py --json out.json

Every variant answers the same problems (`generate_math_problems`, levels 1-5, a seed the demo does
not use) greedily through the transformers engine, once at the longest budget. Greedy decoding is
prefix-stable, so the answer at a shorter budget is the first k tokens of the long one: each response
is cut at every budget in `--budgets` (by the model's own tokens) and checked there too. Correctness
is `persyn.scoring.answers.check_answer` (the project's answer checker).

A variant is a model plus a prompt format (system prompt, completion template): a distinct teacher as
a config would declare it. SmolLM2 (the usual student) is measured as a reference, not as a teacher.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/http.py shadows http

STEPS = "Solve the problem step by step in a few short lines, then finish with: The answer is N."


def variants() -> dict[str, dict]:
    # The demo's own prompt formats (one copy, in persyn.demo), so the measurement is of its pool.
    from persyn.demo import fewshot_template
    from persyn.demo.project import CONCISE_SYSTEM_PROMPT as CONCISE

    q, g, s = "zoo:qwen2.5-coder-0.5b-instruct", "zoo:gemma3-270m", "zoo:smollm2-135m-instruct"
    stop = ("\nQuestion:",)  # a base model goes on to write the next question itself
    return {
        "qwen": {"spec": {"model": q}},
        "qwen-concise": {"spec": {"model": q, "system_prompt": CONCISE}},
        "qwen-steps": {"spec": {"model": q, "system_prompt": STEPS}},
        "gemma": {"spec": {"model": g, "template": "completion"}, "stop": stop},
        "gemma-fewshot": {
            "spec": {"model": g, "template": "completion", "completion_template": fewshot_template()},
            "stop": stop,
        },
        "smollm (student ref.)": {"spec": {"model": s}},
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-level", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--only", nargs="+", default=None, help="variant names (default: all)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from persyn.demo import generate_math_problems
    from persyn.engines import load_engine
    from persyn.engines.base import GenerationParams
    from persyn.engines.spec import EngineSpec
    from persyn.scoring.answers import check_answer
    from persyn.util.hardware import cpu_info

    problems = generate_math_problems(5 * args.per_level, seed=args.seed)
    budgets = sorted(args.budgets)
    info = cpu_info()
    print(
        f"CPU: {cpu_name()} ({info.capability}, native bf16: {info.native_bf16}), "
        f"torch threads {torch.get_num_threads()}; {len(problems)} problems, budgets {budgets}",
        flush=True,
    )
    results: dict[str, dict] = {}
    for name, v in variants().items():
        if args.only and name not in args.only:
            continue
        engine = load_engine(EngineSpec(batch_size=args.batch_size, **v["spec"]))
        params = GenerationParams(max_new_tokens=budgets[-1], stop=v.get("stop", ()))
        t0 = time.perf_counter()
        gens = engine.generate([p.prompt for p in problems], params)
        wall = time.perf_counter() - t0
        tok = engine.tokenizer
        acc: dict[int, dict[int, float]] = {}
        for b in budgets:
            per_level: dict[int, list[bool]] = {}
            for p, g in zip(problems, gens, strict=True):
                ids = tok(g.text, add_special_tokens=False)["input_ids"]
                text = g.text if len(ids) <= b else tok.decode(ids[:b])
                per_level.setdefault(p.difficulty, []).append(check_answer(text, p.answer).correct)
            acc[b] = {lv: sum(x) / len(x) for lv, x in sorted(per_level.items())}
            acc[b][0] = sum(sum(x) for x in per_level.values()) / len(problems)  # 0 = all levels
        ntok = sum(g.completion_tokens for g in gens)
        results[name] = {
            "accuracy": {str(b): {str(k): v for k, v in a.items()} for b, a in acc.items()},
            "completion_tokens_mean": ntok / len(gens),
            "hit_budget": sum(g.finish_reason == "length" for g in gens) / len(gens),
            "wall_s": wall,
            "tokens_per_s": ntok / wall,
            "dtype": str(engine.dtype),
            "sample": gens[min(5, len(gens) - 1)].text[:300],
        }
        engine.close()
        line = "  ".join(
            f"@{b}: " + " ".join(f"{acc[b][lv]:.2f}" for lv in (1, 2, 3, 4, 5)) + f" | all {acc[b][0]:.2f}"
            for b in budgets
        )
        print(
            f"{name:22s} {line}   mean {ntok / len(gens):.0f} tok, "
            f"{results[name]['hit_budget']:.0%} hit budget, {wall:.0f} s ({ntok / wall:.0f} tok/s)",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu_name(), "per_level": args.per_level, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
