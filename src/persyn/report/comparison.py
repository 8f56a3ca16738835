"""The report's student comparison (`persyn compare`'s `<run>/compare.json`): one panel per metric,
a bar per model with its 95% interval, the generation cost of each strategy's data
beside them, and the table behind the figure (report/page.py places both in the page).

    plot_comparison(doc, report_dir / "comparison.png")
    comparison_context(doc)     # the template's rows: metric cells, cost, paired differences
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from persyn.report.figures import count_axis, new_figure, save, style

__all__ = ["FIGURE", "comparison_context", "plot_comparison"]

FIGURE = "comparison.png"
# The panels, in this order where present; accuracy and win rate are the headline skills.
PANEL_ORDER = (
    "constraints_strict",
    "accuracy",
    "constraints_loose",
    "all_constraints_strict",
    "all_constraints_loose",
    "reference_margin",
    "reference_loglik",
    "judge_score",
    "win_rate",
)
_UNTRAINED, _OURS, _OTHER = "#868e96", "#1c7ed6", "#adb5bd"


def _columns(doc: dict[str, Any]) -> list[str]:
    cols = doc["table"]["columns"]
    rank = {m: i for i, m in enumerate(PANEL_ORDER)}
    return sorted(cols, key=lambda c: (rank.get(c.split("/", 1)[1], len(rank)), c))


def plot_comparison(doc: dict[str, Any], path: Path) -> None:
    rows = doc["table"]["rows"]
    names = [r["name"] for r in rows]
    cols = _columns(doc)
    panels = [*cols, "cost"]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = new_figure(4.2 * ncols, 0.5 + (1.1 + 0.32 * len(names)) * nrows)
    colors = [_UNTRAINED if n == "untrained" else _OURS if n == "persyn" else _OTHER for n in names]
    ys = list(range(len(names)))[::-1]
    for k, col in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        if col == "cost":
            vals = [(r.get("cost") or {}).get("generations") or 0 for r in rows]
            ax.barh(ys, vals, color=colors)
            count_axis(ax.xaxis)
            ax.set_title("generations to build the data", fontsize=10, loc="left")
        else:
            means, lo, hi = [], [], []
            for r in rows:
                m = r["metrics"].get(col)
                ok = m and m.get("n") and m.get("mean") is not None
                means.append(m["mean"] if ok else 0.0)
                lo.append(m["mean"] - m["low"] if ok else 0.0)
                hi.append(m["high"] - m["mean"] if ok else 0.0)
            left = min(0.0, min(m - e for m, e in zip(means, lo, strict=True)))
            ax.barh(ys, [m - left for m in means], left=left, color=colors, xerr=[lo, hi], capsize=3)
            ax.set_title(f"{col} (95% interval)", fontsize=10, loc="left")
        ax.set_yticks(ys, names)
        style(ax)
    fig.suptitle(
        f"The student trained on each strategy's data ({doc.get('examples')} examples each)",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    save(fig, path)


def _cell(m: dict[str, Any] | None) -> str:
    if not m or not m.get("n") or m.get("mean") is None:
        return "—"
    return f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def _diff(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "—"
    star = "*" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{d['mean']:+.3f}{star}"


def comparison_context(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the template shows of compare.json (None: no comparison in this run)."""
    if not doc:
        return None
    cols = _columns(doc)
    refs = doc["table"].get("references", [])
    rows = []
    for r in doc["table"]["rows"]:
        cost = r.get("cost") or {}
        rows.append(
            {
                "name": r["name"],
                "cells": [_cell(r["metrics"].get(c)) for c in cols],
                "generations": f"{cost['generations']:,}" if cost.get("generations") else "—",
                "diffs": [
                    ", ".join(
                        f"{c.split('/', 1)[1]} {_diff(r['vs'].get(ref, {}).get(c))}"
                        for c in cols
                        if r["vs"].get(ref, {}).get(c)
                    )
                    or "—"
                    for ref in refs
                ],
            }
        )
    from persyn.student.compare import comparison_summary

    return {
        "columns": cols,
        "references": refs,
        "rows": rows,
        # The primary comparison, Strong's gain, the alpha curve, seeds, identical data, routing,
        # the teachers' quality: the lines `persyn compare` prints under its table.
        "summary": comparison_summary(doc),
        "examples": doc.get("examples"),
        "eval_sets": doc.get("eval_sets", {}),
    }
