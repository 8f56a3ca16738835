"""The drawing helpers every report figure shares (the run page's and the student comparison's):
a matplotlib `Figure` on the Agg canvas (never pyplot, so the caller's backend and global state are
untouched), count axes people read at a glance, one axis style, and an atomic PNG write.

    fig = new_figure(6, 3); ax = fig.add_subplot(); ...; style(ax); save(fig, path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from persyn.util.atomic import atomic_path

__all__ = ["count_axis", "new_figure", "save", "short_count", "style"]


def new_figure(width: float, height: float):
    """A blank figure, sized in inches, laid out by matplotlib's constrained layout."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig


def short_count(x: float, _pos: Any = None) -> str:
    """Axis labels people read at a glance: 950, 12K, 1.5M (no '1e7' offset text)."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.4g}"


def count_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(short_count))


def style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
