"""`persyn plan`: what a run will cost, per teacher, before any model runs.

Route-then-Generate (RtG) = calibration x every teacher + each other prompt once, split by the
allocation: an assumed even split before routing, the actual routes once the run directory holds
them. Generate-then-Select (GtS) = every prompt x every teacher.

Tokens per generation:
- prompt tokens: counted with the teacher's own tokenizer and template where its files are local
  (all prompts up to `SAMPLE` of them, else a seeded sample of `SAMPLE`, scaled); without a local
  tokenizer, characters / 4. The method is reported per teacher.
- completion tokens: the observed mean of that teacher's calibration responses when the run
  directory holds some, else `max_new_tokens` (an upper bound). Also reported per teacher.
Cost: tokens x the teacher's `cost_per_1k_tokens`, where given.

Prompts over a model's context window (ingest's own check, `stages.ingest.length_check`: each
model's template and tokenizer, room left for the response) are left out of the counts, as a run
leaves them out, and listed.

Nothing is written; the run directory, if present, is only read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from persyn.config import Config
from persyn.store.keys import digest

SAMPLE = 20_000
#: Too-long prompts the plan shows (`--json` lists them all).
SHOWN_TOO_LONG = 10


@dataclass
class TeacherPlan:
    teacher: str
    calibration: int
    routed: int
    prompt_tokens: float  # mean per generation
    completion_tokens: float
    prompt_token_method: str
    completion_token_method: str
    gts_generations: int
    price_input: float | None = None
    price_output: float | None = None
    done: int = 0  # responses this teacher configuration already has in the run dir

    @property
    def generations(self) -> int:
        return self.calibration + self.routed

    @property
    def tokens(self) -> float:
        return self.generations * (self.prompt_tokens + self.completion_tokens)

    @property
    def gts_tokens(self) -> float:
        return self.gts_generations * (self.prompt_tokens + self.completion_tokens)

    def _cost(self, n: int) -> float | None:
        if self.price_input is None:
            return None
        return n * (
            self.prompt_tokens / 1000 * self.price_input
            + self.completion_tokens / 1000 * (self.price_output or 0)
        )

    @property
    def cost(self) -> float | None:
        return self._cost(self.generations)

    @property
    def gts_cost(self) -> float | None:
        return self._cost(self.gts_generations)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            generations=self.generations,
            tokens=self.tokens,
            cost=self.cost,
            gts_tokens=self.gts_tokens,
            gts_cost=self.gts_cost,
        )
        return d


@dataclass
class Plan:
    n_prompts: int
    n_calibration: int
    allocation: str  # "assumed even split" or "actual routes"
    teachers: list[TeacherPlan]
    notes: list[str] = field(default_factory=list)
    # Prompts over a model's context (one entry per prompt and model), as ingest reports them.
    too_long: list[dict[str, Any]] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # models without a local tokenizer

    @property
    def generations(self) -> int:
        return sum(t.generations for t in self.teachers)

    @property
    def gts_generations(self) -> int:
        return sum(t.gts_generations for t in self.teachers)

    @property
    def tokens(self) -> float:
        return sum(t.tokens for t in self.teachers)

    @property
    def gts_tokens(self) -> float:
        return sum(t.gts_tokens for t in self.teachers)

    @property
    def cost(self) -> float | None:
        costs = [t.cost for t in self.teachers if t.cost is not None]
        return sum(costs) if costs else None

    @property
    def gts_cost(self) -> float | None:
        costs = [t.gts_cost for t in self.teachers if t.gts_cost is not None]
        return sum(costs) if costs else None

    @property
    def saving(self) -> float:
        """GtS generations per RtG generation."""
        return self.gts_generations / self.generations if self.generations else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_prompts": self.n_prompts,
            "n_calibration": self.n_calibration,
            "allocation": self.allocation,
            "route_then_generate": {
                "generations": self.generations,
                "tokens": self.tokens,
                "cost": self.cost,
            },
            "generate_then_select": {
                "generations": self.gts_generations,
                "tokens": self.gts_tokens,
                "cost": self.gts_cost,
            },
            "gts_per_rtg_generation": self.saving,
            "teachers": [t.to_dict() for t in self.teachers],
            "too_long": self.too_long,
            "context_unchecked": self.unchecked,
            "notes": self.notes,
        }


def _sample(texts: list[str], seed: int) -> tuple[list[str], bool]:
    if len(texts) <= SAMPLE:
        return texts, False
    order = sorted(range(len(texts)), key=lambda i: digest(f"plan:{seed}:{i}", None))
    return [texts[i] for i in order[:SAMPLE]], True


def make_plan(config: Config, *, skip_bad_rows: bool | None = None) -> Plan:
    from persyn.stages.ingest import length_check, length_check_key, load_prompt_set, token_counter

    ps = load_prompt_set(config, skip_bad_rows=skip_bad_rows)
    notes = [ps.report.summary()]
    run = _read_run(config)
    cached = run.get("length_check") or {}
    if cached.get("key") == length_check_key(config, ps.prompts):
        length = cached["result"]  # the run directory checked this very prompt set already
    else:
        length = length_check(config, ps.prompts)
    excluded = {t["id"] for t in length["too_long"]}
    if excluded:
        first = length["too_long"][0]
        notes.append(
            f"{len(excluded)} prompt(s) exceed a model's context window and are left out, as a run "
            f"leaves them out; first: {first['source'] or first['id']} has {first['tokens']:,} tokens "
            f"for {first['limit_name']} (at most {first['max_tokens']:,} with room for the response)"
        )
    if length["unchecked"]:
        notes.append(f"context length not checked for {', '.join(length['unchecked'])} (no local tokenizer)")
    texts = [p.text for p in ps.prompts if p.id not in excluded]
    n = len(run["working"]) if run.get("working") else len(texts)
    if run.get("working"):
        notes.append(f"prompt count from the run directory ({n} prompts fit every model's context)")
    c = min(config.calibration.size, n)
    sample, sampled = _sample(texts, config.seed)
    teachers = config.teacher_names
    routed_total = n - c
    counts = run.get("routed")
    allocation = "actual routes" if counts else "assumed even split"
    plans: list[TeacherPlan] = []
    for j, t in enumerate(teachers):
        tc = config.teacher(t)
        counter = token_counter(tc.engine_spec())
        if counter is not None and sample:
            count, _ = counter
            toks = count(sample)
            mean_p = sum(toks) / len(toks)
            what = f"sample of {len(sample)}" if sampled else f"all {len(sample)}"
            method = f"tokenizer ({what} prompts)"
        else:
            mean_p = sum(len(s) for s in sample) / max(len(sample), 1) / 4
            method = "characters / 4 (no local tokenizer)"
        obs = run.get("completion", {}).get(t)
        if obs:
            mean_c, cmethod = obs[0], f"observed mean of {obs[1]} calibration responses"
        else:
            mean_c, cmethod = float(config.generation_for(t).max_new_tokens), "max_new_tokens (upper bound)"
        if counts:
            routed = counts.get(t, 0)
        else:
            routed = routed_total // len(teachers) + (1 if j < routed_total % len(teachers) else 0)
        price = tc.cost_per_1k_tokens
        plans.append(
            TeacherPlan(
                teacher=t,
                calibration=c,
                routed=routed,
                prompt_tokens=mean_p,
                completion_tokens=mean_c,
                prompt_token_method=method,
                completion_token_method=cmethod,
                gts_generations=n,
                price_input=price.input if price else None,
                price_output=price.output if price else None,
                done=run.get("done", {}).get(t, 0),
            )
        )
    if not counts:
        notes.append(
            "routed generations split evenly across teachers until the router has routed the prompts"
        )
    return Plan(n, c, allocation, plans, notes, length["too_long"], length["unchecked"])


def _read_run(config: Config) -> dict[str, Any]:
    """What an existing run directory tells the plan, read through a read-only run context (its
    keys are the ones the run remembered; nothing is loaded or written). Empty when there is none."""
    from persyn.stages import STAGES
    from persyn.stages.context import RunContext, StageError
    from persyn.store import StoreError

    try:
        ctx = RunContext.read_only(config, STAGES)
    except StoreError:
        return {}
    if ctx is None:
        return {}
    with ctx.store as store:
        out: dict[str, Any] = {
            "working": store.get_subset("prompts"),
            "length_check": store.get_state("length_check"),
        }
        cal = store.get_subset("calibration") or []
        counts = {(r["teacher"], r["gen_key"]): r["ok"] for r in store.response_counts()}
        completion, done = {}, {}
        for t in config.teacher_names:
            try:
                gk = ctx.teacher_gen_key(t)
            except StageError:  # this teacher configuration has not run here
                continue
            rows = store.get_responses(t, gk, cal) if cal else {}
            toks = [r.completion_tokens for r in rows.values() if r.completion_tokens is not None]
            if toks:
                completion[t] = (sum(toks) / len(toks), len(toks))
            done[t] = counts.get((t, gk), 0)
        out["completion"] = completion
        out["done"] = done
        try:
            routes = ctx.result("route").routes
        except StageError:
            return out
        calset = set(cal)
        routed: dict[str, int] = {}
        for pid, t in zip(routes.prompt_ids, routes.assigned, strict=True):
            if pid not in calset:
                routed[t] = routed.get(t, 0) + 1
        out["routed"] = routed
        return out


def render_plan(plan: Plan, console) -> None:
    from rich.table import Table

    def num(x: float | None, money: bool = False) -> str:
        if x is None:
            return "-"
        return f"{x:,.2f}" if money else f"{x:,.0f}"

    table = Table(
        title=f"plan: {plan.n_prompts} prompts, {plan.n_calibration} calibration, "
        f"{len(plan.teachers)} teachers"
    )
    for col in (
        "teacher",
        "calibration",
        f"routed ({plan.allocation})",
        "RtG gens",
        "RtG tokens",
        "RtG cost",
        "GtS gens",
        "GtS tokens",
        "GtS cost",
        "done",
    ):
        table.add_column(col, justify="left" if col == "teacher" else "right")
    for t in plan.teachers:
        table.add_row(
            t.teacher,
            num(t.calibration),
            num(t.routed),
            num(t.generations),
            num(t.tokens),
            num(t.cost, True),
            num(t.gts_generations),
            num(t.gts_tokens),
            num(t.gts_cost, True),
            num(t.done),
        )
    table.add_row(
        "[bold]total",
        num(sum(t.calibration for t in plan.teachers)),
        num(sum(t.routed for t in plan.teachers)),
        f"[bold]{num(plan.generations)}",
        num(plan.tokens),
        num(plan.cost, True),
        f"[bold]{num(plan.gts_generations)}",
        num(plan.gts_tokens),
        num(plan.gts_cost, True),
        num(sum(t.done for t in plan.teachers)),
    )
    console.print(table)
    console.print(
        f"Route-then-Generate: [bold]{plan.generations:,}[/] generations; Generate-then-Select: "
        f"[bold]{plan.gts_generations:,}[/] ({plan.saving:.1f}x as many)."
    )
    for t in plan.teachers:
        console.print(
            f"  {t.teacher}: prompt tokens by {t.prompt_token_method}; "
            f"completion tokens by {t.completion_token_method}"
        )
    for note in plan.notes:
        console.print(f"  note: {note}", markup=False)
    for t in plan.too_long[:SHOWN_TOO_LONG]:
        console.print(
            f"  [yellow]too long[/] for {t['limit_name']}: {t['source'] or t['id']}, {t['tokens']:,} tokens "
            f"(at most {t['max_tokens']:,})",
            highlight=False,
        )
    if len(plan.too_long) > SHOWN_TOO_LONG:
        console.print(f"  ... and {len(plan.too_long) - SHOWN_TOO_LONG} more (persyn plan --json lists all)")
