"""The run context: what every stage shares, and the one way stages talk to each other.

    ids = ctx.calibration_ids()                 # the run's prompt sets
    gk = ctx.teacher_gen_key("qwen")            # the run's content keys
    routes = ctx.result("route").routes         # another stage's result, read back for this config
    ctx.run_stage("export")                     # another stage's work (strategies re-exports)
    ctx.write_artifact(ROUTING_FILE, doc)            # a file beside the store (routing.json...)
    ctx.generate_responses("generate", "qwen", ids)   # model work -> store rows, batch by batch

The driver is the only writer: `generate_responses` and `run_score_job` take the executor's
results and write each batch in one store transaction (`executor.batch_size` rows, else the
model's own batch size), so a crash loses at most the batch in flight. Batches are cut from the
whole list of a step's work (`Job.positions`), so a resumed run runs the batches an uninterrupted
run would have run, and writes the same rows. Before any work, each unit logs the resume line
("calibrate qwen: 40 done earlier, 24 to do") to the store's events and to the console.

Engine fingerprints (part of every store key) are remembered in the store's state by engine spec,
so a stage that needs only a key (scoring stored responses, changing the student) never loads a
teacher. When an engine is loaded to do work, its real fingerprint is checked against the
remembered one; if they differ (e.g. another dtype on a GPU machine) the real one wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from persyn.config import Config
from persyn.engines.spec import EngineSpec
from persyn.executors import BatchResult, Executor, Job, WorkItem, todo_positions
from persyn.store import ResponseKey, ResponseRow, RunStore, ScoreRow, make_gen_key
from persyn.store.keys import SPEED_ONLY_SPEC_KEYS, digest
from persyn.util.atomic import atomic_write, remove, write_json
from persyn.util.errors import PersynError
from persyn.util.progress import Progress

# The run directory beside the store and its manifest: every file and folder a stage writes.
PROMPTS_DIR = "prompts"  # ingest: load_report.json, bad_rows.jsonl, duplicates.jsonl, too_long.jsonl
ROUTERS_DIR = "routers"  # train-router: <train key>/ with the router files and METRICS_FILE
METRICS_FILE = "metrics.json"  # train-router: the router against the baselines, inside its folder
ROUTING_FILE = "routing.json"  # route: the routing of the current routes (counts, caps, costs)
DATASET_DIR = "dataset"  # export: the PerSyn dataset
EXPORTS_FILE = "export.json"  # export: what each export wrote, by strategy
STRATEGIES_DIR = "strategies"  # strategies: <name>/, one dataset per baseline
STRATEGIES_FILE = "strategies.json"  # strategies: each strategy's figures
REPORT_DIR = "report"  # report: index.html and its figures
STUDENTS_DIR = "students"  # train: <strategy>/ with the trained student (model/, train.json)
EVALS_FILE = "evals.json"  # eval: each model's metrics on each eval set (rows are in the store)
COMPARE_FILE = "compare.json"  # compare: the strategies' table, the teachers' accuracy


class StageError(PersynError, RuntimeError):
    """A stage cannot run (a missing prerequisite, an impossible setting); the message says why
    and what to run."""


@dataclass
class WorkCounts:
    """What one unit of work (a teacher's generations, a scorer's scores) did."""

    name: str
    wanted: int = 0
    done_before: int = 0
    new: int = 0
    failed: int = 0
    failed_before: int = 0
    seconds: float = 0.0
    regenerated: int = 0  # cut responses given a second try (generation.regenerate_cut)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class TeacherWork:
    """What each teacher generated in a stage (calibrate, generate)."""

    teachers: dict[str, WorkCounts] = field(default_factory=dict)

    @property
    def new_generations(self) -> int:
        return sum(c.new for c in self.teachers.values())


@dataclass
class RunContext:
    config: Config
    store: RunStore
    executor: Executor | None  # None: a read-only context (`persyn plan`), which loads no model
    ui: Progress
    retry_failed: bool = False
    #: Called after each committed batch with (stage, batches committed so far in that stage);
    #: tests use it to crash at a deterministic point.
    on_commit: Callable[[str, int], None] | None = None
    #: Stage name -> module (`persyn.stages.STAGES`, given by the pipeline or the plan: this module
    #: imports no stage, so stages can import it without a circle).
    stages: Mapping[str, ModuleType] = field(default_factory=dict)
    _batches: dict[str, int] = field(default_factory=dict)
    _working: list[str] | None = None
    #: Set on a context for another router alpha (`with_router_alpha`): its router and routes are
    #: content-keyed rows and folders like any other, but never become the run's current ones.
    variant: str | None = None

    def with_router_alpha(self, alpha: float) -> RunContext:
        """This run seen with `router.alpha = alpha` (the alpha grid of `persyn compare`): the same
        store and executor; train-router and route keep their results out of the run's current
        state (`routing.json`, the current router)."""
        from dataclasses import replace

        router = self.config.router.model_copy(update={"alpha": float(alpha)})
        config = self.config.model_copy(update={"router": router})
        return replace(self, config=config, variant=f"alpha={float(alpha):g}", _working=self._working)

    @classmethod
    def read_only(cls, config: Config, stages: Mapping[str, ModuleType]) -> RunContext | None:
        """A context over the existing run directory of `config`, for reading (None if there is
        none): keys are the remembered ones, and asking for one never remembered is a StageError."""
        if not RunStore.exists(config.output.dir):
            return None
        return cls(
            config, RunStore.open(config.output.dir, readonly=True), None, Progress(None), stages=stages
        )

    @property
    def teachers(self) -> list[str]:
        return self.config.teacher_names

    @property
    def batch_size(self) -> int | None:
        """Rows per batch set in the config, or None: each model's own (`Executor.batch_rows`)."""
        return self.config.executor.batch_size

    # ------------------------------------------------------------------ prompt sets

    def working_ids(self) -> list[str]:
        """The prompts of this run that fit every model, in file order (set by ingest)."""
        if self._working is None:
            ids = self.store.get_subset("prompts")
            if ids is None:
                raise StageError("no prompts loaded in this run yet")
            self._working = ids
        return self._working

    def set_working_ids(self, ids: list[str]) -> None:
        self.store.set_subset("prompts", ids, replace=True)
        self._working = ids

    def calibration_ids(self) -> list[str]:
        ids = self.store.get_subset("calibration")
        if ids is None:
            raise StageError("no calibration subset yet: run `persyn calibrate CONFIG` first")
        return ids

    # ------------------------------------------------------------------ keys

    def fingerprint(self, spec: EngineSpec, *, verify: bool = False) -> str:
        """The engine fingerprint of `spec`: remembered in the store, else (or with `verify`)
        from the loaded engine."""
        key = spec_digest(spec)
        known = self.store.get_state("fingerprints", {})
        if key not in known:
            key = next((k for k in legacy_spec_digests(spec) if k in known), key)
        if key in known and not verify:
            return known[key]
        if self.executor is None:
            raise StageError(f"{spec.model} has not been loaded in this run yet: its key is unknown")
        fp = self.executor.fingerprint(spec)
        if known.get(key) != fp:
            if key in known:
                self.store.log_event(
                    "engines",
                    "info",
                    f"{spec.model}: fingerprint changed from {known[key]} to {fp}; "
                    "rows are keyed by the new one",
                )
            known[key] = fp
            self.store.set_state("fingerprints", known)
        return fp

    def teacher_gen_key(self, teacher: str, *, verify: bool = False) -> str:
        """The key of `teacher`'s responses: its engine fingerprint and generation parameters."""
        cfg = self.config
        params = cfg.generation_for(teacher).params()
        fp = self.fingerprint(cfg.teacher_spec(teacher), verify=verify)
        gk = make_gen_key(fp, params.key())
        keys = self.store.get_state("gen_keys", {})
        if gk not in keys and not self.store.readonly:
            keys[gk] = {"teacher": teacher, "fingerprint": fp, "params": asdict(params)}
            self.store.set_state("gen_keys", keys)
        return gk

    def gen_keys(self) -> dict[str, str]:
        return {t: self.teacher_gen_key(t) for t in self.teachers}

    def gen_key_info(self, gen_key: str) -> dict[str, Any]:
        """What a gen key stands for: teacher, engine fingerprint, generation parameters."""
        return self.store.get_state("gen_keys", {}).get(gen_key, {})

    # ------------------------------------------------------------------ other stages

    def result(self, stage: str, /) -> Any:
        """What `stage` offers later stages, for the current config, read back from the run
        (its module's `result(ctx)`); a StageError names the command to run first."""
        return self._stage_module(stage).result(self)

    def run_stage(self, stage: str, /, **options: Any) -> Any:
        """Run `stage` (its module's `run(ctx, **options)`); it resumes from what the store holds."""
        return self._stage_module(stage).run(self, **options)

    def _stage_module(self, stage: str) -> ModuleType:
        if stage not in self.stages:
            raise StageError(f"unknown stage {stage!r}; stages are {', '.join(self.stages)}")
        return self.stages[stage]

    # ------------------------------------------------------------------ the run directory

    def path(self, *parts: str) -> Path:
        """A path in the run directory (a dataset or report folder; see the names above)."""
        return self.store.path(*parts)

    def artifact(self, name: str) -> Any:
        """A JSON file of the run directory (`ROUTING_FILE`, `EXPORTS_FILE`, ...), or None if not written."""
        path = self.store.path(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_artifact(self, name: str, content: Any) -> Path:
        """Write a file of the run directory, atomically: JSON for a dict or list, text as is;
        None removes it. The one way a stage writes a file of its own beside the store."""
        path = self.store.path(name)
        if content is None:
            remove(path)
        elif isinstance(content, str):
            atomic_write(path, content)
        else:
            write_json(path, content)
        return path

    # ------------------------------------------------------------------ writing rows

    def committed(self, stage: str) -> None:
        """Called after each batch transaction (counts the batches of each stage)."""
        n = self._batches[stage] = self._batches.get(stage, 0) + 1
        if self.on_commit is not None:
            self.on_commit(stage, n)

    def log_todo(self, stage: str, unit: str, done: int, todo: int, failed: int = 0) -> None:
        e = self.store.log_todo(stage, done, todo, failed=failed, retrying=self.retry_failed, unit=unit)
        self.ui.say(f"[dim]{stage}[/] {e.message}")

    def log_done(self, stage: str, counts: WorkCounts) -> None:
        if not counts.new and not counts.failed:
            return
        msg = f"{counts.name}: {counts.new} new, {counts.failed} failed in {counts.seconds:.1f}s"
        self.store.log_event(stage, "done", msg, **counts.to_dict())

    def regen_gen_key(self, teacher: str) -> str | None:
        """The key of `teacher`'s second tries at cut responses (`generation.regenerate_cut`): the
        same engine with the larger budget, so it is an ordinary content key. None when off."""
        params = self.config.generation_for(teacher).regen_params()
        if params is None:
            return None
        fp = self.fingerprint(self.config.teacher_spec(teacher))
        gk = make_gen_key(fp, params.key())
        keys = self.store.get_state("gen_keys", {})
        if gk not in keys and not self.store.readonly:
            keys[gk] = {"teacher": teacher, "fingerprint": fp, "params": asdict(params), "regenerates": True}
            self.store.set_state("gen_keys", keys)
        return gk

    def final_responses(
        self, teacher: str, prompt_ids: Sequence[str], *, include_errors: bool = False
    ) -> dict[str, ResponseRow]:
        """`teacher`'s response to each prompt as the dataset sees it: the first one, or, where
        that was cut and regeneration is on, the second try (its row, under the regeneration key)
        once there is one. Scores, filters and exports all read responses through this."""
        rows = self.store.get_responses(
            teacher, self.teacher_gen_key(teacher), prompt_ids, include_errors=include_errors
        )
        cut = [pid for pid, r in rows.items() if r.status == "ok" and r.finish_reason == "length"]
        rgk = self.regen_gen_key(teacher) if cut else None
        if rgk is not None:
            rows.update(self.store.get_responses(teacher, rgk, cut))
        return rows

    def final_keys(self, teacher: str, prompt_ids: Sequence[str]) -> dict[str, ResponseKey]:
        """The store key of each prompt's final response (`final_responses`); the first try's key
        where `teacher` has no response yet."""
        gk = self.teacher_gen_key(teacher)
        keys = {pid: ResponseKey(pid, teacher, gk) for pid in prompt_ids}
        if self.config.generation_for(teacher).regenerate_cut.enabled:
            keys.update({pid: r.key for pid, r in self.final_responses(teacher, prompt_ids).items()})
        return keys

    def generate_responses(self, stage: str, teacher: str, prompt_ids: Sequence[str]) -> WorkCounts:
        """Make sure `teacher` has a response row for every prompt in `prompt_ids`: generate what
        the store lacks (and, with retry_failed, what failed), one transaction per batch; then,
        with `generation.regenerate_cut`, a second try at each cut one (its own rows, same rules)."""
        ids = list(dict.fromkeys(prompt_ids))
        counts = WorkCounts(f"{teacher}", wanted=len(ids))
        if not ids:
            return counts
        gk = self.teacher_gen_key(teacher)
        store, retry = self.store, self.retry_failed
        todo, done, failed = store.response_progress(teacher, gk, ids, retry_failed=retry)
        if todo:
            # About to load the model anyway: check that the remembered fingerprint still holds.
            real = self.teacher_gen_key(teacher, verify=True)
            if real != gk:
                gk = real
                todo, done, failed = store.response_progress(teacher, gk, ids, retry_failed=retry)
        counts.done_before, counts.failed_before = done, failed
        self.log_todo(stage, teacher, done, len(todo), failed)
        params = self.config.generation_for(teacher).params()
        self._generate(stage, teacher, gk, params, ids, todo, counts)
        regen = self.config.generation_for(teacher).regen_params()
        if regen is not None:
            rows = store.get_responses(teacher, gk, ids)
            cut = [pid for pid in ids if pid in rows and rows[pid].finish_reason == "length"]
            if cut:
                rgk = self.regen_gen_key(teacher)
                assert rgk is not None
                unit = f"{teacher} (cut at {params.max_new_tokens} tokens, again with {regen.max_new_tokens})"
                todo, done, failed = store.response_progress(teacher, rgk, cut, retry_failed=retry)
                self.log_todo(stage, unit, done, len(todo), failed)
                again = WorkCounts(unit, wanted=len(cut), done_before=done, failed_before=failed)
                self._generate(stage, teacher, rgk, regen, cut, todo, again)
                counts.regenerated = len(cut)
                counts.new += again.new
                counts.failed += again.failed
        return counts

    def _generate(
        self, stage, teacher, gk, params, ids: list[str], todo: list[str], counts: WorkCounts
    ) -> None:
        """Generate `todo` (a part of `ids`, the whole work list that fixes the batches)."""
        if not todo:
            return
        store = self.store
        params_dict = asdict(params)
        prompts = {p.id: p for p in store.get_prompts(todo)}
        # Batches are cut from the whole list `ids`, done prompts included (Job.positions): a
        # resumed run generates the same batches of prompts as an uninterrupted one.
        positions = todo_positions(ids, set(todo))
        items = [WorkItem(ResponseKey(ids[i], teacher, gk), prompts[ids[i]].text) for i in positions]
        spec = self.config.teacher_spec(teacher)
        job = Job(f"{stage}/{teacher}", spec, "generate", items, params, self.batch_size, positions)
        t0 = time.perf_counter()
        new = failed = 0
        with self.ui.task(f"{stage} · {counts.name}", total=len(items)) as advance:
            for batch in self._executor().run(job):
                rows = _response_rows(batch, teacher, gk, params_dict)
                store.put_responses(rows)
                self.committed(stage)
                new += sum(r.status == "ok" for r in rows)
                failed += sum(r.status == "error" for r in rows)
                advance(len(rows))
        counts.new += new
        counts.failed += failed
        counts.seconds += time.perf_counter() - t0
        self.record_engine(job.spec)
        self.log_done(stage, counts)
        if failed:
            self.ui.say(
                f"[yellow]{stage} {counts.name}: {failed} generation(s) failed; their errors are "
                "in the store (re-run with --retry-failed to try them again)[/]"
            )

    def run_score_job(self, stage: str, job: Job, kind: str, scorer_key: str) -> WorkCounts:
        """Run a scoring job through the executor and store each batch (NaN = not scorable)."""
        counts = WorkCounts(job.name, wanted=len(job.items))
        t0 = time.perf_counter()
        with self.ui.task(f"{stage} · {job.name}", total=len(job.items)) as advance:
            for batch in self._executor().run(job):
                rows = _score_rows(batch, kind, scorer_key)
                self.store.put_scores(rows)
                self.committed(stage)
                counts.new += sum(r.value is not None for r in rows)
                counts.failed += sum(r.value is None for r in rows)
                advance(len(rows))
        counts.seconds = time.perf_counter() - t0
        self.record_engine(job.spec)
        self.log_done(stage, counts)
        return counts

    def _executor(self) -> Executor:
        if self.executor is None:
            raise StageError("this run context is read-only: it runs no model")
        return self.executor

    # ------------------------------------------------------------------ how models ran

    def record_engine(self, spec: EngineSpec) -> None:
        """Remember how a model that just did work ran (dtype and why, device, threads) in the
        run's state `engines`, by fingerprint (the key of the rows it wrote), and log a line when
        that is new or changed; the report and `persyn status` show them."""
        info = self._executor().describe(spec)
        info["roles"] = [name for name, s in self.config.engine_roles().items() if s == spec]
        engines = self.store.get_state("engines", {})
        fp = info.get("fingerprint", spec.model)
        if engines.get(fp) != info:
            engines[fp] = info
            self.store.set_state("engines", engines)
            self.store.log_event("engines", "info", engine_line(info), fingerprint=fp)


#: Score kinds (the `kind` column of the scores table).
QUALITY = "quality"
LEARNABILITY = "learnability"
NOT_SCORABLE = "not scorable (empty response, or over the model's context window)"


def spec_digest(spec: EngineSpec) -> str:
    """The key under which a spec's engine fingerprint is remembered. A local model with `dtype:
    auto` loads in a dtype that depends on the machine (and the fingerprint with it), so the key
    names what `auto` resolves to here: a run moved to another kind of CPU loads the model again
    to learn its fingerprint instead of keying new rows by the old one."""
    return _spec_key(spec.model_dump_json(exclude=set(SPEED_ONLY_SPEC_KEYS)), spec)


#: Engine spec defaults of older persyn versions whose spec digests included them.
_LEGACY_SPEC_DEFAULTS = ({"batch_size": 8},)


def legacy_spec_digests(spec: EngineSpec) -> list[str]:
    """The keys an older persyn remembered `spec`'s fingerprint under: the whole spec, speed
    settings included, with the batch size it then defaulted to. Found, they save a model load."""
    keys = [_spec_key(spec.model_dump_json(), spec)]
    for defaults in _LEGACY_SPEC_DEFAULTS:
        update = {k: v for k, v in defaults.items() if getattr(spec, k) is None}
        if update:
            keys.append(_spec_key(spec.model_copy(update=update).model_dump_json(), spec))
    return keys


def _spec_key(dumped: str, spec: EngineSpec) -> str:
    key = digest(dumped)
    if spec.engine == "transformers" and spec.dtype == "auto":
        from persyn.util.hardware import dtype_name, resolve_device, resolve_dtype

        key += ":" + dtype_name(resolve_dtype("auto", resolve_device(spec.device)))
    return key


def engine_line(info: dict[str, Any]) -> str:
    """One line on how a model ran: "qwen (zoo:qwen...): float32 on cpu, 2 threads (auto: ...)"."""
    who = ", ".join(info.get("roles") or []) or info.get("engine", "?")
    line = f"{who} ({info.get('model')})"
    if info.get("dtype"):
        line += f": {info['dtype']} on {info.get('device', info.get('engine'))}"
        if info.get("threads"):
            line += f", {info['threads']} thread{'s' if info['threads'] > 1 else ''}"
        if info.get("replicas"):
            line += f", {info['replicas']} replica(s)"
        if info.get("dtype_reason"):
            line += f" ({info['dtype_reason']})"
    else:
        line += f": {info.get('engine')} engine (dtype: the server's)"
    return line


def _response_rows(batch: BatchResult, teacher: str, gk: str, params: dict) -> list[ResponseRow]:
    per_row = batch.seconds / max(len(batch), 1)
    rows = []
    for r in batch.results:
        pid = r.item.key.prompt_id
        if r.ok and r.value is not None:
            rows.append(
                ResponseRow.from_generation(pid, teacher, gk, r.value, params=params, duration_s=per_row)
            )  # type: ignore[arg-type]
        else:
            rows.append(
                ResponseRow.failure(
                    pid, teacher, gk, r.error or "no result", params=params, duration_s=per_row
                )
            )
    return rows


def _score_rows(batch: BatchResult, kind: str, scorer_key: str) -> list[ScoreRow]:
    rows = []
    for r in batch.results:
        k = r.item.key
        value = r.value if r.ok else None
        if isinstance(value, float) and value != value:  # NaN: the scorer's "missing"
            value = None
        error = None if value is not None else (r.error or NOT_SCORABLE)
        rows.append(ScoreRow(kind, scorer_key, k.prompt_id, k.teacher, k.gen_key, value, error))
    return rows
