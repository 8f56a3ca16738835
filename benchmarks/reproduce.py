"""A miniature of the paper's Table 2 on this machine: the demo's teacher pool, SmolLM2-135M as the
student, every strategy's dataset, the student fine-tuned on each alike, and each evaluated on
held-out math (answer accuracy, reference log-likelihood) and instructions (judge, win rate).

    .venv/bin/python benchmarks/reproduce.py                       # ~45 min on 2 cores (see docs/student.md)
    .venv/bin/python benchmarks/reproduce.py --dir /tmp/repro --json /tmp/repro.json
    .venv/bin/python benchmarks/reproduce.py --prompts 64 --eval-math 40 --max-new-tokens 96   # a quick look

It is `persyn run` then `persyn compare` on a project written by `write_demo` with larger sizes; it
resumes like they do (re-run the same command after an interruption). It prints the table, the
teachers' own accuracy, the machine and the wall time of each step. What it measures is what it
shows: the sizes are chosen to fit the time, not to favour any strategy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/http.py shadows http


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("runs/reproduce"), help="project and run directory")
    ap.add_argument("--prompts", type=int, default=160, help="training prompts (math and instructions)")
    ap.add_argument("--instructions", type=int, default=40, help="of which instructions")
    ap.add_argument("--calibration", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=256, help="teachers' answer length")
    ap.add_argument("--eval-math", type=int, default=200, help="held-out math problems (reference loglik)")
    ap.add_argument("--eval-answer-limit", type=int, default=60, help="of which answered (accuracy)")
    ap.add_argument("--eval-instructions", type=int, default=24, help="held-out instructions (judge, win)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--strategies", default="persyn,strong,mix,car,random")
    ap.add_argument("--oracle", action="store_true", help="add the full oracle (every teacher, every prompt)")
    ap.add_argument("--json", type=Path, help="also write compare.json and the timings here")
    args = ap.parse_args()

    from persyn.demo.project import write_demo
    from persyn.pipeline import Pipeline
    from persyn.util.hardware import describe_machine

    machine = describe_machine()
    print(
        f"machine: {machine['cpu']} ({machine['torch_capability']}), torch threads {machine['threads']}, "
        f"dtype auto -> {machine['auto_dtype']}",
        flush=True,
    )
    cfg = write_demo(
        args.dir,
        n_prompts=args.prompts,
        n_instructions=args.instructions,
        calibration=args.calibration,
        max_new_tokens=args.max_new_tokens,
        eval_math=args.eval_math,
        eval_answer_limit=args.eval_answer_limit,
        eval_instructions=args.eval_instructions,
    )
    timings = {}
    overrides = {"train.epochs": args.epochs}
    with Pipeline.from_config(cfg, overrides=overrides, progress=True) as pipe:
        t = time.perf_counter()
        pipe.run()
        timings["run_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        table = pipe.compare(args.strategies, oracle=args.oracle)
        timings["compare_s"] = round(time.perf_counter() - t, 1)
        doc = pipe.ctx.result("compare")
    print()
    print(table.render())
    print("\nteachers' own accuracy on the calibration prompts with answers:")
    for name, iv in doc["teachers"].items():
        print(f"  {name}: {iv['mean']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}] (n={iv['n']})")
    print(f"\nrouting of the PerSyn dataset: {doc['routing'].get('persyn')}")
    print(f"timings: {timings} (run, then compare)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"compare": doc, "timings": timings, "machine": machine, "args": vars(args)},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
