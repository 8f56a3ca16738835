"""The report's router figures: the router against the baselines on Hit@1, Hit@3 and the share of
the oracle's gain recovered (grouped bars with 95% intervals, the axis cut at QUALITY_FLOOR so one
far-negative ratio cannot squash the rest) and on regret; the router highlighted."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from persyn.report.figures import new_figure, save, style

__all__ = ["QUALITY_FLOOR", "QUALITY_METRICS", "interval", "number", "plot_regret", "plot_router_quality"]

# Bar metrics of the router figure (regret has its own panel: lower is better, other units).
QUALITY_METRICS = ("hit@1", "hit@3", "oracle_gain_recovered")
# The router figure's axis stops here: bars below are cut, hatched and labelled with their value.
QUALITY_FLOOR = -1.0

_HIGHLIGHT = "#d9480f"
_BASELINES = ("#4c6ef5", "#37b24d", "#ae3ec9", "#1098ad", "#f59f00", "#868e96", "#74c0fc", "#c0eb75")


def number(value: Any) -> float | None:
    """A finite float, or None for anything missing (None, NaN, a string, a dict)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _router_colors(names: Sequence[str], ours: str | None) -> list[str]:
    colors, i = [], 0
    for n in names:
        if n == ours:
            colors.append(_HIGHLIGHT)
        else:
            colors.append(_BASELINES[i % len(_BASELINES)])
            i += 1
    return colors


def interval(metrics: Mapping[str, Any], name: str) -> tuple[float, float] | None:
    ci = metrics.get("ci95")
    pair = ci.get(name) if isinstance(ci, Mapping) else None
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        return None
    lo, hi = number(pair[0]), number(pair[1])
    return None if lo is None or hi is None else (lo, hi)


# long: one figure drawn in order (bars, intervals, cut bars and their labels); its parts share the axes
def plot_router_quality(
    metrics: Mapping[str, Mapping[str, Any]], names: Sequence[str], ours: str | None, path: Path
) -> None:
    """Grouped bars with their 95% intervals. Hit@k lies in [0, 1], but "oracle gain recovered" of a
    poor router can be -6 (it is a ratio over a small gain): such bars would squash the rest, so the
    axis stops at QUALITY_FLOOR, and a bar below it is cut there, hatched, with its value written."""
    shown = [m for m in QUALITY_METRICS if any(number(metrics[n].get(m)) is not None for n in names)]
    fig = new_figure(min(11.0, max(7.0, 1.5 + 0.3 * len(names) * len(shown))), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(names))
    colors = _router_colors(names, ours)
    floor = QUALITY_FLOOR
    clipped = False
    for i, n in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(shown))]
        vals = [number(metrics[n].get(m)) for m in shown]
        heights = [max(v, floor) if v is not None else 0.0 for v in vals]
        bars = ax.bar(
            xs,
            heights,
            width,
            label=n,
            color=colors[i],
            edgecolor="black" if n == ours else "none",
            linewidth=1.2,
        )
        for bar, v, m in zip(bars, vals, shown, strict=True):
            ci = interval(metrics[n], m)
            cut = v is not None and v < floor
            if cut:
                clipped = True
                bar.set_hatch("///")
            elif ci is not None and v is not None:
                lo, hi = max(ci[0], floor), max(ci[1], floor)
                ax.errorbar(
                    bar.get_x() + bar.get_width() / 2,
                    v,
                    yerr=[[v - lo], [hi - v]],
                    fmt="none",
                    ecolor="black",
                    elinewidth=0.8,
                    capsize=2,
                )
            below = v is not None and v < 0  # label a negative bar under its end, not on the axis
            top = ci[1] if (ci is not None and not below) else (bar.get_height() if v is not None else 0)
            ax.annotate(
                "—" if v is None else (f"{v:.1f}" if cut else f"{v:.2f}"),
                (bar.get_x() + bar.get_width() / 2, max(v, floor) if below else max(top, 0)),
                xytext=(0, -2 if below else 2),
                textcoords="offset points",
                ha="center",
                va="top" if below else "bottom",
                fontsize=7,
                fontweight="bold" if n == ours else "normal",
            )
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(shown)), [m.replace("_", " ") for m in shown])
    ax.set_ylabel("higher is better")
    values = [v for n in names for m in shown if (v := number(metrics[n].get(m))) is not None]
    highs = [ci[1] for n in names for m in shown if (ci := interval(metrics[n], m)) is not None]
    lows = [max(ci[0], floor) for n in names for m in shown if (ci := interval(metrics[n], m)) is not None]
    top, low = max(values + highs + [1.0]), max(min(values + lows + [0.0]), floor)
    ax.set_ylim(low - 0.25 if low < 0 else 0, top * 1.15)
    n_prompts = next((int(v) for nm in names if (v := number(metrics[nm].get("n"))) is not None), None)
    title = "Router against the baselines (prompts it never trained on"
    title += f", n = {n_prompts}; 95% intervals)" if n_prompts is not None else "; 95% intervals)"
    ax.set_title(title, fontsize=11, loc="left")
    if clipped:
        ax.text(
            0.01,
            0.02,
            f"hatched: below {floor:g}, cut at {floor:g}; its value is written under it",
            transform=ax.transAxes,
            fontsize=7,
            color="#495057",
        )
    ax.legend(
        fontsize=8, ncols=min(len(names), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False
    )
    style(ax)
    save(fig, path)


def plot_regret(
    metrics: Mapping[str, Mapping[str, Any]], names: Sequence[str], ours: str | None, path: Path
) -> None:
    fig = new_figure(7.0, max(2.2, 0.38 * len(names) + 1.2))
    ax = fig.add_subplot()
    vals = [number(metrics[n].get("regret")) for n in names]
    colors = _router_colors(names, ours)
    ys = list(range(len(names)))[::-1]
    bars = ax.barh(ys, [v or 0.0 for v in vals], color=colors)
    for bar, v, n in zip(bars, vals, names, strict=True):
        if n == ours:
            bar.set_edgecolor("black")
            bar.set_linewidth(1.2)
        ax.annotate(
            "—" if v is None else f"{v:.3f}",
            (max(bar.get_width(), 0), bar.get_y() + bar.get_height() / 2),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
            fontweight="bold" if n == ours else "normal",
        )
    ax.set_yticks(ys, names)
    right = max([v for v in vals if v is not None] + [1e-9])
    ax.set_xlim(0, right * 1.25)
    ax.set_xlabel("regret against the oracle (label units, lower is better)")
    ax.set_title("Regret", fontsize=11, loc="left")
    style(ax)
    save(fig, path)
