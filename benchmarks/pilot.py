"""The training pilot of the evidence miniature (docs/student.md): which learning rate, epochs and
LoRA-or-full move the student, chosen on the validation split, never on the test split.

    .venv/bin/python benchmarks/pilot.py --dir runs/evidence-quick      # after `persyn run` there

Each candidate trains the student on Strong's dataset (the run's `strong` strategy, the same
number of examples the comparison uses) with the pipeline's own trainer (TRL), and is scored with
the pipeline's own eval on the `validation` eval sets beside the untrained student. It prints one
line per candidate (the validation metrics with intervals and the paired test against the
untrained student) and the candidate with the best mean of the primary metric; the evidence
config's `train:` section is then set to it by hand, and the choice written in docs/student.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/http.py shadows http

#: name -> overrides of the config's `train:` section.
CANDIDATES = {
    "lora-lr3e-4-1ep": {"learning_rate": 3e-4, "epochs": 1.0},
    "lora-lr1e-3-1ep": {"learning_rate": 1e-3, "epochs": 1.0},
    "lora-lr1e-3-2ep": {"learning_rate": 1e-3, "epochs": 2.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="an evidence project directory (persyn run done)")
    ap.add_argument("--metric", default="constraints_strict", help="what chooses (the primary metric)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated, from CANDIDATES")
    ap.add_argument("--size", choices=("full", "quick"), help="quick: the two 1-epoch candidates only")
    args = ap.parse_args()

    from persyn.engines.spec import resolve_model
    from persyn.pipeline import Pipeline
    from persyn.stages.student_data import training_examples
    from persyn.student.compare import equal_subsamples
    from persyn.student.stats import paired_test
    from persyn.student.train import train_student
    from persyn.util.hardware import describe_machine

    print(f"machine: {describe_machine()['cpu']}", flush=True)
    cfg_path = args.dir / "persyn-evidence.yaml"
    with Pipeline.from_config(cfg_path, progress=True) as pipe:
        ctx = pipe.ctx
        val = ctx.config.eval.names("validation")
        pipe.strategies(["strong"])
        rows = training_examples(ctx, "strong")
        n = ctx.config.train.examples or len(rows)
        rows = equal_subsamples({"strong": rows}, n, seed=ctx.config.train.seed)["strong"]
        base = ctx.run_stage("eval", model="base", sets=val)
        table = []
        names = args.candidates.split(",")
        if args.size == "quick":
            names = [n for n in names if n.endswith("-1ep")]
        for name in names:
            settings = ctx.config.train.model_copy(update=CANDIDATES[name])
            t = time.perf_counter()
            trained = train_student(
                rows,
                resolve_model(ctx.config.student.model),
                ctx.path("pilot", name),
                settings,
                base_name=ctx.config.student.model,
                progress=ctx.ui,
                label=f"pilot · {name}",
            )
            train_s = time.perf_counter() - t
            res = ctx.run_stage("eval", model=str(trained.model_dir), sets=val)
            values, base_values, shown = [], [], []
            for s, r in res.items():
                for metric, iv in r.metrics.items():
                    shown.append(f"{s}/{metric} {iv}")
                if args.metric in r.scores:
                    values += r.scores[args.metric]
                    base_values += base[s].scores[args.metric]
            test = paired_test(values, base_values)
            table.append((test.difference.mean, name))
            print(
                f"{name}: {'; '.join(shown)} | {args.metric} vs untrained {test.difference} "
                f"p={test.p_value:.3g} ({test.test}); trained in {train_s:.0f} s",
                flush=True,
            )
        for s, r in base.items():
            print(f"untrained {s}: " + "; ".join(f"{m} {iv}" for m, iv in r.metrics.items()))
        best = max(table)
        print(f"chosen on validation ({args.metric}, gain over untrained): {best[1]} ({best[0]:+.3f})")


if __name__ == "__main__":
    main()
