"""Stage filter: which responses are left out of every dataset, and why (persyn.dataset.filters:
cut, empty, repetition, echo, wrong shape), one verdict per response kept in the store.

    ctx.run_stage("filter")                        # calibration x teachers, and the current routes
    filters = ctx.result("filter")
    filters.verdicts([(pid, teacher), ...])        # {(pid, teacher): ["cut"]}; [] = kept
    filters.junk(calibration_ids)                  # n x T bool: the labels' "junk" (stage score)
    filters.summary(pairs)                         # per teacher: cut, regenerated, dropped by filter

A verdict is about a teacher's final response (`ctx.final_responses`: the second try where a cut
response was generated again) and is a row of the scores table (kind `filter`, keyed by the
filter settings and `FILTERS_VERSION`; value 1 kept, 0 dropped; `meta` the filters that drop it and
their measures). Verdicts cost no model: a stage that needs one and finds none computes it then
(export, strategies and report read datasets through `export_records.build_records`, which asks
here, so every strategy's dataset leaves out the same rows). With `filters.enabled: false` every
response is kept and nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persyn.stages.context import RunContext, StageError
from persyn.store import ScoreRow
from persyn.store.keys import content_key

#: Score kind of the verdict rows.
FILTER = "filter"
_EXAMPLES = 3  # per filter, in the card and the report
_CLIP = 400  # characters of a prompt or response shown in an example


@dataclass
class FilterResult:
    checked: int
    new: int
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # teacher -> filter -> rows

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "new": self.new, "dropped": self.dropped}


def filters_key(ctx: RunContext) -> str | None:
    """The key of this config's verdicts (None: no filter is on)."""
    from persyn.dataset.filters import FILTERS_VERSION, FilterSettings

    settings = FilterSettings.from_config(ctx.config.filters)
    if not settings.active:
        return None
    return "filters:" + content_key("filters", FILTERS_VERSION, settings.__dict__)


class Filters:
    """What the filter stage offers later stages (see the module docstring)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.key = filters_key(ctx)

    def verdicts(
        self, pairs: Sequence[tuple[str, str]], *, stage: str = "filter"
    ) -> dict[tuple[str, str], list[str]]:
        """The filters that drop each (prompt id, teacher) pair's final response ([] = kept);
        pairs without an ok response are absent. Missing verdicts are computed and stored."""
        return {k: v["dropped_by"] for k, v in self._rows(pairs, stage).items()}

    def _rows(
        self, pairs: Sequence[tuple[str, str]], stage: str, *, compute: bool = True
    ) -> dict[tuple[str, str], dict[str, Any]]:
        from persyn.dataset.filters import FilterSettings, check_response
        from persyn.scoring.quality import has_reference

        ctx = self.ctx
        if self.key is None or not pairs:
            return {}
        by_teacher = _by_teacher(pairs)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        settings = FilterSettings.from_config(ctx.config.filters)
        for t, pids in by_teacher.items():
            rows = ctx.final_responses(t, pids)
            keys = [r.key for r in rows.values()]
            stored = ctx.store.get_scores(FILTER, self.key, keys)
            todo = [r for r in rows.values() if r.key not in stored]
            new: list[ScoreRow] = []
            if todo and compute:
                prompts = {p.id: p for p in ctx.store.get_prompts([r.prompt_id for r in todo])}
                for r in todo:
                    p = prompts[r.prompt_id]
                    v = check_response(
                        p.text, r.text, r.finish_reason, settings, has_reference=has_reference(p.answer)
                    )
                    meta = {"dropped_by": v.dropped_by, "measures": v.measures}
                    new.append(
                        ScoreRow(FILTER, self.key, r.prompt_id, t, r.gen_key, float(v.kept), meta=meta)
                    )
                if not ctx.store.readonly:
                    ctx.store.put_scores(new)
                    ctx.committed(stage)
            for s in [*stored.values(), *new]:
                meta = s.meta or {}
                out[(s.prompt_id, t)] = {"dropped_by": list(meta.get("dropped_by", [])), **meta}
        return out

    def junk(self, ids: Sequence[str]) -> np.ndarray:
        """len(ids) x T: True where the teacher's final response to the prompt is dropped."""
        teachers = self.ctx.teachers
        mask = np.zeros((len(ids), len(teachers)), dtype=bool)
        if self.key is None:
            return mask
        pos = {pid: i for i, pid in enumerate(ids)}
        found = self.verdicts([(pid, t) for t in teachers for pid in ids], stage="score")
        for (pid, t), dropped in found.items():
            mask[pos[pid], teachers.index(t)] = bool(dropped)
        return mask

    def summary(self, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """For the card and the report: per teacher, the pairs' responses that were cut at the
        first try, generated again, and dropped by each filter (a row two filters drop counts
        under both; `dropped` counts it once), and a few examples per filter."""
        ctx = self.ctx
        teachers: dict[str, dict[str, Any]] = {}
        examples: dict[str, list[dict[str, Any]]] = {}
        rows = self._rows(pairs, "filter")
        by_teacher = _by_teacher(pairs)
        for t, pids in by_teacher.items():
            first = ctx.store.get_responses(t, ctx.teacher_gen_key(t), pids)
            final = ctx.final_responses(t, pids)
            cut = [pid for pid, r in first.items() if r.finish_reason == "length"]
            entry = {
                "rows": len(pids),
                "cut": len(cut),
                "regenerated": sum(final[pid].gen_key != first[pid].gen_key for pid in cut if pid in final),
                "dropped": 0,
                "by_filter": {},
            }
            for pid in pids:
                dropped = rows.get((pid, t), {}).get("dropped_by", [])
                entry["dropped"] += bool(dropped)
                for name in dropped:
                    entry["by_filter"][name] = entry["by_filter"].get(name, 0) + 1
                    if len(examples.setdefault(name, [])) < _EXAMPLES:
                        examples[name].append(
                            {
                                "teacher": t,
                                "prompt_id": pid,
                                "response": _clip(final[pid].text or ""),
                                "measures": rows[(pid, t)].get("measures", {}),
                            }
                        )
            teachers[t] = entry
        shown = [e["prompt_id"] for v in examples.values() for e in v]
        prompts = {p.id: p for p in ctx.store.get_prompts(shown)}
        for v in examples.values():
            for e in v:
                e["prompt"] = _clip(prompts[e["prompt_id"]].text)
        return {
            "active": list(ctx.config.filters.active()),
            "regenerate_factor": _regen_factor(ctx),
            "teachers": teachers,
            "examples": examples,
        }


def _by_teacher(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """(prompt id, teacher) pairs grouped by teacher, in order."""
    out: dict[str, list[str]] = {}
    for pid, t in pairs:
        out.setdefault(t, []).append(pid)
    return out


def _regen_factor(ctx: RunContext) -> float | None:
    r = ctx.config.generation.regenerate_cut
    return r.max_new_tokens_factor if r.enabled else None


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else text[:_CLIP] + " [...]"


def result(ctx: RunContext) -> Filters:
    return Filters(ctx)


def run(ctx: RunContext, pairs: Sequence[tuple[str, str]] | None = None) -> FilterResult:
    """Verdicts for `pairs` (default: every teacher's calibration responses and the current routes)."""
    if pairs is None:
        pairs = [(pid, t) for t in ctx.teachers for pid in ctx.calibration_ids()]
        try:
            pairs += ctx.result("route").routes.pairs()
        except StageError:
            pass  # not routed yet: the calibration responses only
    pairs = list(dict.fromkeys(pairs))
    filters = Filters(ctx)
    if filters.key is None:
        ctx.ui.say("[bold]filter[/]: every filter is off (filters.enabled / the filters section)")
        return FilterResult(len(pairs), 0)
    done = len(filters._rows(pairs, "filter", compute=False))
    ctx.log_todo("filter", "responses", done, len(pairs) - done)
    verdicts = filters.verdicts(pairs)
    res = FilterResult(len(verdicts), len(verdicts) - done)
    for (_, t), dropped in verdicts.items():
        for name in dropped:
            per = res.dropped.setdefault(t, {})
            per[name] = per.get(name, 0) + 1
    n_drop = sum(bool(d) for d in verdicts.values())
    ctx.store.log_event("filter", "done", f"{n_drop} of {len(verdicts)} responses dropped", **res.to_dict())
    ctx.ui.say(f"[bold]filter[/]: {n_drop} of {len(verdicts)} responses dropped")
    return res
