"""Junk among the routed rows of the demo config, with the paper's labels and with the quality gate
(issue 19, item 3): how many of the rows the router sends a prompt to are left out by the row
filters (cut at the token limit after the second try, empty, a loop, an echo, the wrong shape).

    flock /tmp/persyn-heavy.lock nice -n 19 .venv/bin/python benchmarks/rows.py --dir /tmp/rows
    .venv/bin/python benchmarks/rows.py --dir /tmp/rows --prompts 32 --calibration 16 --max-new-tokens 64

1. The demo project (`persyn.demo.project.write_demo`, sized for this machine by
   `persyn.demo.sizing` as `persyn demo` sizes it, unless sizes are given) is run with
   `router.quality_floor.enabled=false`: the paper's labels; filters and the second try at cut
   responses on, so every routed row gets a verdict.
2. The same run directory with the default config (the gate on): every response and score is
   reused; the router is trained on the gated labels, prompts are routed again, and only the
   routed prompts whose teacher changed are generated.
Each step's `export.json` (`row_checks`: per teacher, rows routed, cut at the first try,
generated again, dropped by each filter) is printed side by side; `--json` writes both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/http.py shadows http


def _run(cfg: Path, overrides: dict, force: bool) -> tuple[dict, float]:
    from persyn.pipeline import Pipeline

    t0 = time.perf_counter()
    with Pipeline.from_config(cfg, overrides=overrides, force=force) as pipe:
        pipe.run()
        doc = pipe.ctx.artifact("export.json")["persyn"]
    return doc, time.perf_counter() - t0


def _totals(doc: dict) -> dict[str, int]:
    checks = doc.get("row_checks", {})
    keys = ("rows", "cut", "regenerated", "dropped")
    return {k: sum(e.get(k, 0) for e in checks.values()) for k in keys}


def main() -> None:
    from persyn.demo import instruction_pool, sizing
    from persyn.demo.project import SHORT_ANSWER_CATEGORIES, SHORT_ANSWER_LEVELS, write_demo

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--calibration", type=int)
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--force", action="store_true", help="reuse a directory made with another config")
    args = ap.parse_args()
    if args.prompts:
        cal = sizing.calibration_for(args.prompts)
        size = sizing.DemoSize(args.prompts, cal, sizing.MAX_NEW_TOKENS, "set by options")
    else:  # as `persyn demo` sizes itself (zoo conversion not counted: it is done once)
        pool = len(instruction_pool(SHORT_ANSWER_CATEGORIES))
        size = sizing.size_for(sizing.measure_speed(), sizing.BUDGET_S, pool)
    cfg = write_demo(
        args.dir,
        n_prompts=size.prompts,
        calibration=args.calibration or size.calibration,
        max_new_tokens=args.max_new_tokens or size.max_new_tokens,
        math_levels=SHORT_ANSWER_LEVELS,
        instruction_categories=SHORT_ANSWER_CATEGORIES,
    )
    paper, t_paper = _run(cfg, {"router.quality_floor.enabled": False}, force=args.force)
    gated, t_gated = _run(cfg, {}, force=True)
    print(f"demo config {cfg} ({t_paper:.0f} s, then {t_gated:.0f} s)")
    print(f"{'labels':<8} {'routed':>7} {'cut 1st':>8} {'again':>6} {'junk':>5}  per teacher (junk/routed)")
    for name, doc in (("paper", paper), ("gated", gated)):
        tot = _totals(doc)
        per = ", ".join(f"{t} {e['dropped']}/{e['rows']}" for t, e in doc["row_checks"].items())
        cells = f"{tot['rows']:>7} {tot['cut']:>8} {tot['regenerated']:>6} {tot['dropped']:>5}"
        print(f"{name:<8} {cells}  {per}")
    if args.json:
        args.json.write_text(json.dumps({"paper": paper, "gated": gated}, indent=2))


if __name__ == "__main__":
    main()
