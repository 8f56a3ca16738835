"""The evidence miniature of the paper's Table 2 on this machine (docs/student.md): constrained
instructions and level-1 arithmetic, three zoo teachers whose strengths differ by prompt,
SmolLM2-135M as the student, every strategy's dataset, the student trained on each alike (PerSyn
and Strong with two seeds), PerSyn's alpha chosen on a validation split, every arm scored on the
test split with paired tests, one comparison named in advance.

    .venv/bin/python benchmarks/reproduce.py --size quick            # fewer items, the same design
    .venv/bin/python benchmarks/reproduce.py --size full --json /tmp/evidence.json

It is `persyn demo --task evidence[-quick]`: `persyn run` then `persyn compare` with the design of
`persyn.demo.evidence.evidence_design`; a killed run resumes when the same command is run again.
It prints the CPU, the table, the primary comparison, Strong's gain over the untrained student,
the alpha curve, the seeds' spread, the teachers' quality and the wall time of each step.
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
    ap.add_argument("--size", choices=("full", "quick"), default="full")
    ap.add_argument("--dir", type=Path, help="project and run directory (default runs/evidence-<size>)")
    ap.add_argument("--json", type=Path, help="also write compare.json, the timings and the machine here")
    ap.add_argument(
        "--force",
        action="store_true",
        help="reuse a run directory made with another config (rows whose keys still match are reused)",
    )
    args = ap.parse_args()

    from persyn.demo.evidence import SIZES, evidence_design, write_evidence
    from persyn.pipeline import Pipeline
    from persyn.student.compare import comparison_summary
    from persyn.util.hardware import describe_machine

    machine = describe_machine()
    print(
        f"machine: {machine['cpu']} ({machine['torch_capability']}), torch threads {machine['threads']}, "
        f"dtype auto -> {machine['auto_dtype']}",
        flush=True,
    )
    print(f"size {args.size}: {SIZES[args.size]}; design {evidence_design(args.size)}", flush=True)
    cfg = write_evidence(args.dir or Path(f"runs/evidence-{args.size}"), args.size)
    timings = {}
    with Pipeline.from_config(cfg, progress=True, force=args.force) as pipe:
        t = time.perf_counter()
        pipe.run()
        timings["run_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        table = pipe.compare(**evidence_design(args.size))
        timings["compare_s"] = round(time.perf_counter() - t, 1)
        doc = pipe.ctx.result("compare")
    print()
    print(table.render())
    print()
    for line in comparison_summary(doc):
        print(line)
    print(f"\nrouting: {doc['routing']}")
    print(f"timings: {timings} (run, then compare) on {machine['cpu']}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"compare": doc, "timings": timings, "machine": machine, "size": args.size},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
