"""Comparing strategies fairly: the same number of examples for each, identical training, and one
table in the shape of the paper's Table 2 (arXiv 2510.10925), as data.

    sets = equal_subsamples({"persyn": ex1, "strong": ex2, ...}, n=300, seed=0)
    ...train each on sets[name] with the same TrainSettings...
    assert_comparable({"persyn": result1.info, "strong": result2.info, ...})
    table = comparison_table({"untrained": {"math": r0}, "persyn": {"math": r1}, ...},
                             costs={"persyn": {"generations": 1234, "completion_tokens": ...}, ...})
    print(table.render())

Subsampling ranks examples by a seeded hash of their prompt text, not by their position: strategies
route the same prompt set to different teachers, so they keep the *same prompts* wherever they all
have them, and only the teachers' answers differ between the arms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from persyn.prompts import normalise_text
from persyn.store.keys import digest
from persyn.student.evaluate import EvalResult
from persyn.student.stats import Interval, PairedTest, metric_interval, paired_test
from persyn.student.train import SFTExample

__all__ = [
    "ComparisonError",
    "ComparisonRow",
    "ComparisonTable",
    "UNTRAINED",
    "assert_comparable",
    "comparison_summary",
    "comparison_table",
    "equal_subsamples",
    "pool_seeds",
]

UNTRAINED = "untrained"


class ComparisonError(ValueError):
    """Strategies that would not be compared on equal terms."""


def _rank(seed: int, prompt: str) -> str:
    return digest(f"{seed}\x00{normalise_text(prompt)}", None)


def equal_subsamples(
    datasets: Mapping[str, Sequence[SFTExample]], n: int | None = None, *, seed: int = 0
) -> dict[str, list[SFTExample]]:
    """The same number of examples from each strategy's dataset (deterministic for a seed).

    Rows with an empty completion are left out first. `n`: the count (None: the smallest dataset's
    size); a dataset with fewer usable rows raises `ComparisonError` naming it. Each subsample keeps
    its dataset's order."""
    usable = {name: [e for e in rows if e.completion.strip()] for name, rows in datasets.items()}
    if not usable:
        raise ComparisonError("no datasets to compare")
    smallest = min(len(rows) for rows in usable.values())
    n = smallest if n is None else n
    short = {name: len(rows) for name, rows in usable.items() if len(rows) < n}
    if short or n < 1:
        raise ComparisonError(
            f"cannot take {n} examples from every strategy: "
            + ", ".join(f"{k} has {v}" for k, v in sorted(short.items()))
        )
    out = {}
    for name, rows in usable.items():
        keep = set(sorted(range(len(rows)), key=lambda i: (_rank(seed, rows[i].prompt), i))[:n])
        out[name] = [rows[i] for i in sorted(keep)]
    return out


def assert_comparable(trainings: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise `ComparisonError` unless every training (its train.json as a dict) used the same
    settings (seed included), base model and number of examples."""
    if not trainings:
        raise ComparisonError("no trainings to compare")
    keys = ("settings", "base_model", "examples")
    first_name, first = next(iter(trainings.items()))
    problems = []
    for name, info in trainings.items():
        for k in keys:
            if info.get(k) != first.get(k):
                problems.append(f"{name}.{k} = {info.get(k)!r} but {first_name}.{k} = {first.get(k)!r}")
    if problems:
        raise ComparisonError("strategies were not trained alike: " + "; ".join(problems))


@dataclass
class ComparisonRow:
    """One model: a strategy's student, or the untrained student."""

    name: str
    metrics: dict[str, Interval]  # "set/metric" -> interval
    vs: dict[str, dict[str, Interval]] = field(default_factory=dict)  # other row -> column -> paired diff
    tests: dict[str, dict[str, PairedTest]] = field(default_factory=dict)  # the same, with p-values
    cost: dict[str, Any] | None = None  # generations, tokens, money, as the strategy's ledger says
    train: dict[str, Any] | None = None  # examples, steps, final loss, wall time

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "vs": {o: {k: v.to_dict() for k, v in d.items()} for o, d in self.vs.items()},
            "tests": {o: {k: v.to_dict() for k, v in d.items()} for o, d in self.tests.items()},
            "cost": self.cost,
            "train": self.train,
        }


@dataclass
class ComparisonTable:
    """Rows in the given order (the untrained student first), columns "set/metric"."""

    columns: list[str]
    rows: list[ComparisonRow]
    references: list[str]  # rows every other row is paired against

    def row(self, name: str) -> ComparisonRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "references": self.references,
            "rows": [r.to_dict() for r in self.rows],
        }

    def render(self) -> str:
        """A plain-text table: mean [95% interval] per column, generations, and for each reference
        the paired difference with a * where its interval excludes 0."""
        head = ["model", *self.columns, "generations"]
        lines = []
        for r in self.rows:
            cells = [r.name, *(str(r.metrics.get(c, "-")) for c in self.columns)]
            cells.append("-" if not r.cost else str(r.cost.get("generations", "-")))
            lines.append(cells)
        for ref in self.references:
            head_ref = f"vs {ref}"
            for r, cells in zip(self.rows, lines, strict=True):
                diffs = r.vs.get(ref, {})
                shown = [
                    f"{c.split('/')[-1]} {d.mean:+.3f}{'*' if d.excludes_zero else ''}"
                    for c in self.columns
                    if (d := diffs.get(c)) is not None and d.n
                ]
                cells.append(", ".join(shown) or "-")
            head.append(head_ref)
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
        fmt = "  ".join(f"{{:{w}}}" for w in widths)
        return "\n".join(fmt.format(*row) for row in [head, *lines])


def comparison_table(
    results: Mapping[str, Mapping[str, EvalResult]],
    *,
    costs: Mapping[str, Mapping[str, Any]] | None = None,
    trainings: Mapping[str, Mapping[str, Any]] | None = None,
    references: Sequence[str] = (UNTRAINED, "strong"),
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> ComparisonTable:
    """The table from every model's eval results (model name -> eval set -> EvalResult). Every model
    must have been evaluated on the same items of the same sets (checked), and every training in
    `trainings` (train.json dicts) alike (`assert_comparable`). Paired differences are against each
    of `references` that is present."""
    if not results:
        raise ComparisonError("no results")
    if trainings:
        assert_comparable(trainings)
    names = list(results)
    set_names = list(next(iter(results.values())))
    columns: list[str] = []
    for s in set_names:
        ids = None
        for name in names:
            if s not in results[name]:
                raise ComparisonError(f"{name} was not evaluated on set {s!r}")
            r_ids = [it.id for it in results[name][s].items]
            if ids is None:
                ids = r_ids
            elif r_ids != ids:
                raise ComparisonError(f"{name} was evaluated on other items of set {s!r} than {names[0]}")
        for name in names:  # union in order of appearance (the untrained row has no win rate)
            columns += [c for m in results[name][s].metrics if (c := f"{s}/{m}") not in columns]
    refs = [r for r in references if r in results]
    boot = dict(confidence=confidence, resamples=resamples, seed=seed)

    def scores(name: str, column: str) -> list[float] | None:
        s, metric = column.split("/", 1)
        return results[name][s].scores.get(metric)

    rows = []
    for name in names:
        metrics = {}
        for c in columns:
            s, metric = c.split("/", 1)
            if metric in results[name][s].metrics:
                metrics[c] = results[name][s].metrics[metric]
        vs: dict[str, dict[str, Interval]] = {}
        tests: dict[str, dict[str, PairedTest]] = {}
        for ref in refs:
            if ref == name:
                continue
            vs[ref], tests[ref] = {}, {}
            for c in columns:
                a, b = scores(name, c), scores(ref, c)
                if a is None or b is None:
                    continue
                pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
                if pairs:
                    test = paired_test([x for x, _ in pairs], [y for _, y in pairs], **boot)
                    vs[ref][c], tests[ref][c] = test.difference, test
        rows.append(
            ComparisonRow(
                name,
                metrics,
                vs,
                tests,
                cost=dict(costs[name]) if costs and name in costs else None,
                train=dict(trainings[name]) if trainings and name in trainings else None,
            )
        )
    return ComparisonTable(columns, rows, refs)


def pool_seeds(
    runs: Sequence[EvalResult], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[EvalResult, dict[str, list[float]]]:
    """One strategy trained with several seeds, as one row: each item's score is its mean over the
    seeds (so the paired tests compare items, with the seed noise averaged in), the intervals are
    recomputed over items, and beside it each metric's mean per seed (the spread a reader needs).
    Every run must cover the same items (checked)."""
    if not runs:
        raise ComparisonError("no runs to pool")
    first = runs[0]
    ids = [it.id for it in first.items]
    for r in runs[1:]:
        if [it.id for it in r.items] != ids:
            raise ComparisonError("the seeds of one strategy were evaluated on different items")
    pooled: dict[str, list[float]] = {}
    per_seed: dict[str, list[float]] = {}
    for metric in first.scores:
        stack = [r.scores[metric] for r in runs if metric in r.scores]
        pooled[metric] = [
            math.nan
            if all(math.isnan(v) for v in col)
            else sum(v for v in col if not math.isnan(v)) / sum(not math.isnan(v) for v in col)
            for col in zip(*stack, strict=True)
        ]
        per_seed[metric] = [r.metrics[metric].mean for r in runs if metric in r.metrics]
    boot = dict(confidence=confidence, resamples=resamples, seed=seed)
    metrics = {m: metric_interval(v, **boot) for m, v in pooled.items()}
    cost = {k: sum(r.cost.get(k, 0.0) for r in runs) for k in first.cost}
    return EvalResult(first.model, first.items, first.answers, pooled, metrics, cost), per_seed


# ----------------------------------------------------------------------------- reading compare.json


def _iv(d: dict) -> str:
    return (
        "-" if not d or not d.get("n") else f"{d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}] (n={d['n']})"
    )


def _test_line(col: str, t: dict) -> str:
    d = t["difference"]
    return (
        f"{col}: {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], p = {t['p_value']:.3g} ({t['test']})"
    )


def comparison_summary(doc: dict) -> list[str]:
    """What `persyn compare` prints under its table and the report shows: the primary comparison,
    Strong's gain over the untrained student, the alpha curve, the seeds, identical data, routing,
    the teachers' quality."""
    lines = []
    p = doc.get("primary")
    if p:
        lines.append(f"primary (named before the run): {p['arm']} vs {p['against']} on {p['metric']}")
        lines += [f"  {_test_line(c, t)}" for c, t in p["tests"].items()] or ["  not measured"]
    g = doc.get("strong_gain")
    if g:
        lines.append("strong vs untrained on the primary metric (can this miniature show anything?)")
        lines += [f"  {_test_line(c, t)}" for c, t in g["tests"].items()]
        if not g["informative"]:
            lines.append("  the interval holds 0: the comparison of strategies is not informative")
    a = doc.get("alpha")
    if a:
        curve = ", ".join(
            f"{c['alpha']:g}: {c['validation']['mean']:.3f}"
            + (f" (= {c['same_data_as']})" if c["same_data_as"] else "")
            for c in a["curve"]
        )
        lines.append(f"alpha chosen on validation ({a['metric']}): {a['chosen']:g}; curve {curve}")
    for arm, by_set in (doc.get("seed_means") or {}).items():
        for s, metrics in by_set.items():
            shown = ", ".join(f"{m} {' / '.join(f'{v:.3f}' for v in vs)}" for m, vs in metrics.items())
            lines.append(f"seeds of {arm} on {s}: {shown}")
    if doc.get("same_data_as"):
        lines.append(
            "identical training data, trained once: "
            + ", ".join(f"{a} = {b}" for a, b in doc["same_data_as"].items())
        )
    unlike = {k: v for k, v in (doc.get("routed_unlike_strong") or {}).items() if v is not None}
    if unlike:
        lines.append(
            "share of prompts given another teacher than Strong's: "
            + ", ".join(f"{k} {v:.2f}" for k, v in unlike.items())
        )
    for name, by_method in (doc.get("teachers") or {}).items():
        shown = ", ".join(f"{m} {_iv(iv)}" for m, iv in by_method.items())
        lines.append(f"teacher {name} on the calibration prompts: {shown}")
    return lines
