"""The run report: one HTML page with PNG figures next to it, readable offline (no CDN, no scripts).

    index = write_report(ReportData(...), run_dir / "report")     # -> report/index.html

What it shows, each figure with a table of its numbers:
- the headline: generations (and tokens, cost where priced) spent against Generate-then-Select;
- teacher allocation: routed prompts per teacher and their share (allocation.png);
- quality labels: per method (answer checks, judge, reward model) how many labels it produced, how
  many it could not score, and how far they can be trusted (a judge's measured pairwise accuracy);
- router quality against the baselines: Hit@1, Hit@3, oracle gain recovered (router_quality.png, with
  95% intervals; the axis stops at -1 and a bar below is cut, hatched and labelled) and regret
  (router_regret.png), the router highlighted; a metric a baseline lacks shows as "—", intervals
  show in the table as "value [low, high]";
- the cost ledger: generations and tokens per teacher and stage, stacked, against what
  Generate-then-Select would have spent (cost.png);
- strategies (when given) and sample rows (HTML-escaped: teacher text is untrusted);
- the student comparison (after `persyn compare`): each strategy's student against the untrained
  one, every metric with its interval, and each strategy's generation cost (comparison.png).

Figures are drawn with matplotlib's object API (`Figure`, Agg canvas), never pyplot, so the caller's
backend and global state are untouched. Files are written under temporary names and renamed;
index.html goes last, and figures an earlier report wrote but this one does not are removed.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from persyn.dataset.card import checks_context
from persyn.report.comparison import comparison_context, plot_comparison
from persyn.report.figures import count_axis, new_figure, save, style
from persyn.report.router_charts import (
    QUALITY_METRICS,
    interval,
    number,
    plot_regret,
    plot_router_quality,
)
from persyn.util.atomic import atomic_write
from persyn.util.credentials import scrub_secrets

__all__ = ["LedgerRow", "ReportData", "headline", "write_report"]

FIGURES = ("allocation.png", "router_quality.png", "router_regret.png", "cost.png", "comparison.png")
# Table column order; any other numeric metric follows, sorted.
METRIC_ORDER = (
    "hit@1",
    "hit@3",
    "regret",
    "oracle_gain_recovered",
    "mean_label",
    "mean_quality",
    "mean_score",
    "mean_learnability",
    "n",
    "n_ranked",
    "n_skipped",
)
ROUTER_NAMES = ("router", "persyn")
PROMPT_CHARS = 300
RESPONSE_CHARS = 600

_GTS = "#adb5bd"
_STAGES = ("#1c7ed6", "#f76707", "#2f9e44", "#ae3ec9", "#e8590c", "#0c8599", "#f08c00", "#5f3dc4")


@dataclass
class LedgerRow:
    """Work actually done: one teacher in one stage (calibration, routed, a baseline's generation...)."""

    teacher: str
    stage: str
    generations: int
    prompt_tokens: int
    completion_tokens: int
    cost: float | None = None


@dataclass
class ReportData:
    title: str
    run_dir: Path
    config: dict
    allocation: dict[str, int]  # teacher -> routed prompts (persyn)
    # "router"/baseline name -> metrics (hit@1, hit@3, regret, mean_quality, mean_learnability,
    # oracle_gain_recovered, ... any subset)
    router_metrics: dict[str, dict[str, float]]
    ledger: list[LedgerRow]  # generations and tokens actually spent, per teacher and stage
    # teacher -> {"generations": n, "tokens": est, "cost": est or None}: Generate-then-Select counterfactual
    gts: dict[str, dict[str, float]]
    # rows with prompt_id, prompt, response, teacher, strategy, quality, learnability (ExportRecords)
    samples: list[Any]
    # strategy -> {"generations": n, "rows": n, "mean_quality": ..}
    strategies: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Which router_metrics entry is ours (highlighted); default: "router", else "persyn".
    router_name: str | None = None
    # Ledger stages the headline counts (default: all of them). A run that also generated baseline
    # datasets can count only ("calibration", "routed") to state what PerSyn itself cost.
    headline_stages: list[str] | None = None
    # Per quality method: {method, key, prompts, labels, failed, mean, timeouts?, reliability}.
    quality: list[dict[str, Any]] = field(default_factory=list)
    # `persyn compare`'s compare.json: the student trained on each strategy (comparison_report.py).
    comparison: dict[str, Any] | None = None
    # The row filters over the dataset (stages/filter.py `Filters.summary`), None when they are off.
    row_checks: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- numbers


def _fmt(value: Any, digits: int = 3) -> str:
    """Integers with thousands separators, floats to `digits` places, text as is, missing as '—'."""
    if isinstance(value, str) and value:
        return value
    f = number(value)
    if f is None:
        return "—"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    return f"{f:,.{digits}f}"


def _fmt_int(value: Any) -> str:
    f = number(value)
    return "—" if f is None else f"{round(f):,}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


def _router_name(data: ReportData) -> str | None:
    if data.router_name is not None:
        return data.router_name if data.router_name in data.router_metrics else None
    return next((n for n in ROUTER_NAMES if n in data.router_metrics), None)


def headline(data: ReportData) -> dict[str, Any]:
    """Spent vs Generate-then-Select: generations, tokens and (where every figure is priced) cost,
    plus the sentence the report leads with. Shares are None when GtS is 0 or unknown."""
    rows = [r for r in data.ledger if data.headline_stages is None or r.stage in data.headline_stages]
    spent_g = sum(int(r.generations) for r in rows)
    spent_t = sum(int(r.prompt_tokens) + int(r.completion_tokens) for r in rows)
    gts_g = sum(number(v.get("generations")) or 0 for v in data.gts.values())
    gts_t = sum(number(v.get("tokens")) or 0 for v in data.gts.values())
    costs = [number(r.cost) for r in rows]
    gts_costs = [number(v.get("cost")) for v in data.gts.values()]
    spent_c = sum(costs) if rows and all(c is not None for c in costs) else None
    gts_c = sum(gts_costs) if gts_costs and all(c is not None for c in gts_costs) else None
    out: dict[str, Any] = {
        "generations": spent_g,
        "gts_generations": gts_g,
        "generations_share": spent_g / gts_g if gts_g else None,
        "tokens": spent_t,
        "gts_tokens": gts_t,
        "tokens_share": spent_t / gts_t if gts_t else None,
        "cost": spent_c,
        "gts_cost": gts_c,
        "cost_share": spent_c / gts_c if spent_c is not None and gts_c else None,
    }
    if gts_g:
        out["text"] = (
            f"{spent_g:,} generations instead of {round(gts_g):,} "
            f"({100 * spent_g / gts_g:.1f}% of Generate-then-Select)"
        )
    else:
        out["text"] = f"{spent_g:,} generations"
    return out


# ----------------------------------------------------------------------------- figures


def _plot_allocation(allocation: Mapping[str, int], path: Path) -> None:
    items = sorted(allocation.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(v for _, v in items)
    fig = new_figure(8.5, max(2.2, 0.38 * len(items) + 1.2))
    ax = fig.add_subplot()
    names = [k for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    bars = ax.barh(names, values, color="#1c7ed6")
    for bar, v in zip(bars, values, strict=True):
        ax.annotate(
            f"{v:,} ({_pct(v, total)})",
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, max(values + [1]) * 1.22)
    count_axis(ax.xaxis)
    ax.set_xlabel("routed prompts")
    ax.set_title(f"Teacher allocation: {total:,} prompts routed", fontsize=11, loc="left")
    style(ax)
    save(fig, path)


# long: one figure drawn in order (stacked bars, the GtS marks, labels); its parts share the axes
def _plot_cost(data: ReportData, path: Path) -> None:
    teachers = list(dict.fromkeys([*(r.teacher for r in data.ledger), *data.gts]))
    stages = list(dict.fromkeys(r.stage for r in data.ledger))
    gens = {(r.teacher, r.stage): 0 for r in data.ledger}
    toks = dict(gens)
    for r in data.ledger:
        gens[(r.teacher, r.stage)] += int(r.generations)
        toks[(r.teacher, r.stage)] += int(r.prompt_tokens) + int(r.completion_tokens)
    colors = {s: _STAGES[i % len(_STAGES)] for i, s in enumerate(stages)}
    has_gts = any(number(v.get("generations")) for v in data.gts.values())
    gts_per_teacher = [number(data.gts.get(t, {}).get("generations")) or 0 for t in teachers]
    fig = new_figure(max(9.0, 3.5 + 0.6 * len(teachers)), 4.6)
    grid = fig.add_gridspec(1, 3, width_ratios=[max(3, len(teachers) * 0.6), 1.2, 1.2])
    ax, ax_g, ax_t = (fig.add_subplot(grid[0, i]) for i in range(3))

    # Per teacher: spent (stacked by stage) beside Generate-then-Select.
    w = 0.38 if has_gts else 0.6
    xs = list(range(len(teachers)))
    off = -w / 2 if has_gts else 0.0
    bottom = [0.0] * len(teachers)
    for s in stages:
        h = [gens.get((t, s), 0) for t in teachers]
        ax.bar([x + off for x in xs], h, w, bottom=bottom, color=colors[s], label=s)
        bottom = [b + v for b, v in zip(bottom, h, strict=True)]
    if has_gts:
        ax.bar(
            [x + w / 2 for x in xs],
            gts_per_teacher,
            w,
            color=_GTS,
            hatch="//",
            edgecolor="white",
            label="Generate-then-Select",
        )
    ax.set_xticks(
        xs, teachers, rotation=30 if len(teachers) > 5 else 0, ha="right" if len(teachers) > 5 else "center"
    )
    ax.set_ylabel("generations")
    ax.set_title("Generations per teacher", fontsize=11, loc="left")
    top = max([*bottom, *gts_per_teacher, 1])
    ax.set_ylim(0, top * 1.08)
    fig.legend(
        *ax.get_legend_handles_labels(),
        fontsize=8,
        frameon=False,
        loc="outside lower center",
        ncols=min(len(stages) + 1, 6),
    )

    # Totals: generations and tokens, spent (stacked by stage) against GtS.
    head = headline(data)
    fig.suptitle(head["text"], fontsize=12, fontweight="bold", x=0.01, ha="left")
    for axis, per, spent, gts_total, unit in (
        (ax_g, gens, head["generations"], head["gts_generations"], "generations"),
        (ax_t, toks, head["tokens"], head["gts_tokens"], "tokens"),
    ):
        base = 0.0
        for s in stages:
            v = sum(per.get((t, s), 0) for t in teachers)
            axis.bar([0], [v], 0.6, bottom=[base], color=colors[s])
            base += v
        labels = ["spent"]
        if gts_total:
            axis.bar([1], [gts_total], 0.6, color=_GTS, hatch="//", edgecolor="white")
            labels.append("GtS")
            axis.annotate(
                _pct(spent, gts_total),
                (0, base),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
                fontweight="bold",
            )
        axis.set_xticks(range(len(labels)), labels)
        axis.set_title(f"Total {unit}", fontsize=11, loc="left")
        axis.set_ylim(0, max(base, gts_total, 1) * 1.1)
    for a in (ax, ax_g, ax_t):
        count_axis(a.yaxis)
        style(a)
    save(fig, path)


# ----------------------------------------------------------------------------- tables


def _metric_columns(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    present: set[str] = set()
    for m in metrics.values():
        present |= {k for k, v in m.items() if not isinstance(v, Mapping | list | tuple)}
    ordered = [k for k in METRIC_ORDER if k in present]
    return ordered + sorted(present - set(ordered))


def _metric_cell(metrics: Mapping[str, Any], name: str) -> str:
    """The value, and its 95% interval where one was measured: "0.412 [0.351, 0.473]"."""
    ci = interval(metrics, name)
    text = _fmt(metrics.get(name))
    return f"{text} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci is not None and text != "—" else text


def _truncate(text: str, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit].rstrip() + f" … [{len(text):,} chars]"


# long: the template's one flat namespace, section by section; split, its names would scatter
def _context(data: ReportData, figures: dict[str, str | None]) -> dict[str, Any]:
    ours = _router_name(data)
    names = list(data.router_metrics)
    if ours in names:  # ours first, the baselines in the order given
        names = [ours] + [n for n in names if n != ours]
    cols = _metric_columns(data.router_metrics)
    total_alloc = sum(data.allocation.values())
    head = headline(data)

    ledger_rows = [
        {
            "teacher": r.teacher,
            "stage": r.stage,
            "generations": _fmt_int(r.generations),
            "prompt_tokens": _fmt_int(r.prompt_tokens),
            "completion_tokens": _fmt_int(r.completion_tokens),
            "cost": _fmt(r.cost, 4),
        }
        for r in data.ledger
    ]
    per_teacher = []
    for t in dict.fromkeys([*(r.teacher for r in data.ledger), *data.gts]):
        mine = [r for r in data.ledger if r.teacher == t]
        g = sum(r.generations for r in mine)
        tok = sum(r.prompt_tokens + r.completion_tokens for r in mine)
        gts = data.gts.get(t, {})
        gts_g = number(gts.get("generations"))
        per_teacher.append(
            {
                "teacher": t,
                "generations": _fmt_int(g),
                "tokens": _fmt_int(tok),
                "gts_generations": _fmt_int(gts_g),
                "gts_tokens": _fmt_int(gts.get("tokens")),
                "gts_cost": _fmt(gts.get("cost"), 4),
                "share": _pct(g, gts_g) if gts_g else "—",
            }
        )
    strategy_cols: list[str] = []
    for v in data.strategies.values():
        strategy_cols += [k for k in v if k not in strategy_cols]
    samples = [
        {
            "prompt_id": s.prompt_id,
            "prompt": _truncate(s.prompt, PROMPT_CHARS),
            "teacher": s.teacher,
            "strategy": s.strategy,
            "response": _truncate(s.response, RESPONSE_CHARS),
            "quality": _fmt(s.quality),
            "learnability": _fmt(s.learnability),
        }
        for s in data.samples
    ]
    return {
        "title": data.title,
        "run_dir": str(data.run_dir),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "figures": figures,
        "headline": head,
        "headline_tokens": (
            f"{head['tokens']:,} tokens instead of ~{round(head['gts_tokens']):,} "
            f"({100 * head['tokens_share']:.1f}%)"
            if head["tokens_share"] is not None
            else None
        ),
        "headline_cost": (
            f"cost {head['cost']:,.2f} instead of ~{head['gts_cost']:,.2f} ({100 * head['cost_share']:.1f}%)"
            if head["cost_share"] is not None
            else None
        ),
        "allocation": [
            {"teacher": t, "prompts": _fmt_int(c), "share": _pct(c, total_alloc)}
            for t, c in sorted(data.allocation.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "allocation_total": _fmt_int(total_alloc),
        "router": ours,
        "metric_cols": cols,
        "metric_rows": [
            {"name": n, "ours": n == ours, "cells": [_metric_cell(data.router_metrics[n], c) for c in cols]}
            for n in names
        ],
        "ledger": ledger_rows,
        "quality_rows": [
            {
                "method": q.get("method", ""),
                "key": q.get("key", ""),
                "prompts": _fmt_int(q.get("prompts")),
                "labels": _fmt_int(q.get("labels")),
                "failed": _fmt_int(q.get("failed")),
                "mean": _fmt(q.get("mean")),
                "timeouts": _fmt_int(q.get("timeouts")),
                "reliability": q.get("reliability", ""),
            }
            for q in data.quality
        ],
        "per_teacher": per_teacher,
        "strategy_cols": strategy_cols,
        "strategy_rows": [
            {"name": k, "cells": [_fmt(v.get(c)) for c in strategy_cols]} for k, v in data.strategies.items()
        ],
        "samples": samples,
        "comparison": comparison_context(data.comparison),
        "row_checks": checks_context(data.row_checks),
        "notes": list(data.notes),
        "config": yaml.safe_dump(scrub_secrets(data.config), sort_keys=False, allow_unicode=True),
    }


def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("persyn", "templates"),
        # Everything in the page comes from data the teachers wrote or the user typed: escape it all.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")


def write_report(data: ReportData, out_dir: Path) -> Path:
    """Draw the figures and write `out_dir/index.html`; returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    template = _template()  # fail before drawing anything if the template is missing
    # Every figure key is present (None = not drawn): the template is strict about undefined names.
    figures: dict[str, str | None] = {name.removesuffix(".png"): None for name in FIGURES}
    ours = _router_name(data)
    names = list(data.router_metrics)
    if ours in names:
        names = [ours] + [n for n in names if n != ours]

    if data.allocation:
        _plot_allocation(data.allocation, out_dir / "allocation.png")
        figures["allocation"] = "allocation.png"
    rm = data.router_metrics
    if names and any(number(rm[n].get(m)) is not None for n in names for m in QUALITY_METRICS):
        plot_router_quality(data.router_metrics, names, ours, out_dir / "router_quality.png")
        figures["router_quality"] = "router_quality.png"
    if names and any(number(data.router_metrics[n].get("regret")) is not None for n in names):
        plot_regret(data.router_metrics, names, ours, out_dir / "router_regret.png")
        figures["router_regret"] = "router_regret.png"
    if data.ledger:
        _plot_cost(data, out_dir / "cost.png")
        figures["cost"] = "cost.png"
    if data.comparison:
        plot_comparison(data.comparison, out_dir / "comparison.png")
        figures["comparison"] = "comparison.png"
    html = template.render(**_context(data, figures))
    index = atomic_write(out_dir / "index.html", html)
    # A figure left from an earlier report would describe another run (removed only now, so the
    # previous index.html never points at a missing file).
    for name in FIGURES:
        if name not in figures.values():
            (out_dir / name).unlink(missing_ok=True)
    return index
