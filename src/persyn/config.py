"""The run config: one YAML file, validated by pydantic, with errors that name the key and line.

Every section is a model with `extra="forbid"`, so a typo is an error instead of a silent default.
Checks that involve several sections (a cap naming an unknown teacher, a budget without prices)
also name the key they are about. The shapes here are the public contract of `persyn run`; keep
them stable once shipped. `persyn init` writes `templates/config.yaml`, which documents every key.

    cfg = load_config("persyn.yaml", overrides={"calibration.size": 64})
    cfg.teacher_spec("qwen")     # the EngineSpec `load_engine` takes
    cfg.manifest_dict()          # what the run directory's manifest hashes (see below)

The manifest hash covers what changes the data (prompts, student, teachers, generation, quality,
calibration, router, routing, baselines, seed), not where or how the work runs (`output`,
`executor`, `prompts.skip_bad_rows`, `prompts.answer_timeout_s`): moving a run or changing the
batch size never needs --force. The student's `train` and `eval` sections stay out too: a trained
student is keyed by its own settings and dataset (students/<strategy>/train.json) and eval rows by
the model and eval settings, so trying other hyperparameters never invalidates the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from persyn.config_errors import KeyedProblems, format_validation_error
from persyn.config_executor import POOL_ROLES, ExecutorConfig, PoolConfig
from persyn.config_rows import FiltersConfig, QualityFloorConfig, RegenerateCutConfig
from persyn.defaults import ALPHA, CAR_BETA, ENCODER, KNN_K, MIX_SHARE, ROUTER, default_strategies
from persyn.engines.base import GenerationParams
from persyn.engines.spec import EngineSpec
from persyn.store.keys import config_hash, without_speed_settings
from persyn.student.settings import EvalSettings, TrainSettings
from persyn.util.errors import PersynError

__all__ = [
    "BaselinesConfig",
    "CalibrationConfig",
    "Config",
    "ConfigError",
    "Cost",
    "ExecutorConfig",
    "FiltersConfig",
    "GenerationConfig",
    "OutputConfig",
    "PoolConfig",
    "PromptsConfig",
    "QualityConfig",
    "RouterConfig",
    "RoutingConfig",
    "StudentConfig",
    "TeacherCap",
    "TeacherConfig",
    "load_config",
    "parse_overrides",
]

#: Export formats D2's `export_dataset` writes.
EXPORT_FORMATS = ("messages", "prompt_completion", "sharegpt", "parquet", "hf")


class ConfigError(PersynError, ValueError):
    """A config that cannot be used. The message names the file, the key and, where known, the line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationConfig(_Section):
    """Generation parameters; `temperature: 0` is greedy."""

    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = 0
    stop: list[str] = Field(default_factory=list)
    regenerate_cut: RegenerateCutConfig = Field(default_factory=RegenerateCutConfig)

    def regen_params(self) -> GenerationParams | None:
        """The parameters of the second try at a cut response (None: regeneration is off)."""
        r = self.regenerate_cut
        if not r.enabled:
            return None
        base = self.params()
        budget = max(base.max_new_tokens + 1, round(base.max_new_tokens * r.max_new_tokens_factor))
        return replace(base, max_new_tokens=budget)

    def params(self) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(self.stop),
        )


class PromptsConfig(_Section):
    path: Path
    format: Literal["auto", "jsonl", "parquet", "csv"] = "auto"
    prompt_field: str = "prompt"
    answer_field: str | None = None
    id_field: str | None = None
    # Refuse malformed rows (default) or skip them and list them in the run directory.
    skip_bad_rows: bool = False
    limit: int | None = Field(default=None, ge=1)
    # How reference answers are checked (scoring/answers.py): auto (by the reference: plain numbers
    # numerically, words as text, the rest symbolically) | numeric | math (math-verify) | exact.
    answer_checker: Literal["auto", "numeric", "math", "exact"] = "auto"
    # Seconds one answer check may take; an overrun scores 0 with the reason "timeout".
    answer_timeout_s: float = Field(default=5.0, gt=0)


class Cost(_Section):
    """Price per 1,000 tokens, in whatever currency the user thinks in."""

    input: float = Field(default=0.0, ge=0.0)
    output: float = Field(default=0.0, ge=0.0)


_SPEC_FIELDS = tuple(EngineSpec.model_fields)


def _spec_of(model: BaseModel) -> EngineSpec:
    return EngineSpec(**{k: getattr(model, k) for k in _SPEC_FIELDS})


class TeacherConfig(EngineSpec):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    # Declared families enable the Family-Strong baseline (the strongest teacher of the student's family).
    family: str | None = None
    # Per-teacher overrides of the top-level `generation` section.
    generation: GenerationConfig | None = None
    cost_per_1k_tokens: Cost | None = None

    def engine_spec(self) -> EngineSpec:
        """The model part only: two roles with the same spec share one loaded engine."""
        return _spec_of(self)


class StudentConfig(EngineSpec):
    family: str | None = None

    def engine_spec(self) -> EngineSpec:
        return _spec_of(self)


class QualityConfig(_Section):
    """How response quality r_q is measured (the method's step 2, docs/method.md).

    `auto`: verifiable answers where a prompt has a reference answer, else the judge (or reward
    model). Every teacher's response to one prompt is scored by the same method.
    """

    method: Literal["auto", "answers", "judge", "reward"] = "auto"
    judge: EngineSpec | None = None
    reward: EngineSpec | None = None
    # method judge: a prompt's reference answer, where it has one, is shown to the judge under the
    # question (docs/router.md, "How far the judge can be trusted"). Off by default: the shipped set,
    # on which defaults are chosen, has no references to measure it on. Under auto such prompts are
    # checked against their answer instead.
    judge_reference: bool = False

    @model_validator(mode="after")
    def _needs_a_model(self) -> QualityConfig:
        problems = []
        if self.method == "judge" and self.judge is None:
            problems.append((("judge",), "quality.method is 'judge' but quality.judge names no model"))
        if self.method == "reward" and self.reward is None:
            problems.append((("reward",), "quality.method is 'reward' but quality.reward names no model"))
        if self.judge is not None and self.reward is not None:
            problems.append((("reward",), "set quality.judge or quality.reward, not both"))
        if problems:
            raise KeyedProblems(problems)
        return self

    @property
    def engine(self) -> EngineSpec | None:
        """The judge or reward model, if any."""
        return self.judge or self.reward


class CalibrationConfig(_Section):
    """The subset every teacher answers. `random`: a seeded hash of each prompt id picks it;
    `diverse`: k-means over the router encoder's prompt embeddings, the prompt nearest each centroid."""

    size: int = Field(default=2500, ge=4)
    selection: Literal["random", "diverse"] = "random"
    # diverse: k-means runs on a seeded pool of pool_factor x size prompts (all, if fewer), since
    # clustering a million prompts into thousands of centroids would dominate the run.
    pool_factor: int = Field(default=10, ge=1)


class RouterConfig(_Section):
    """Combined label (docs/method.md, Eq. 2) and the Bradley-Terry router (Eq. 3)."""

    # Defaults: persyn.defaults (the CLI and the Python API read the same).
    alpha: float = Field(default=ALPHA, ge=0.0, le=1.0)
    normalisation: Literal["zscore", "minmax"] = ROUTER.normalisation
    encoder: str = ENCODER
    pooling: Literal["auto", "mean", "last", "cls"] = ROUTER.pooling
    max_length: int = Field(default=ROUTER.max_length, ge=8)
    device: str = "cpu"
    fine_tune: bool = False
    encoder_lr: float = Field(default=ROUTER.encoder_lr, gt=0)
    hidden: int = Field(default=ROUTER.hidden, ge=1)
    layers: int = Field(default=ROUTER.layers, ge=0)
    dropout: float = Field(default=ROUTER.dropout, ge=0.0, lt=1.0)
    learning_rate: float = Field(default=ROUTER.learning_rate, gt=0)
    weight_decay: float = Field(default=ROUTER.weight_decay, ge=0)
    batch_prompts: int = Field(default=ROUTER.batch_prompts, ge=1)
    max_epochs: int = Field(default=ROUTER.max_epochs, ge=1)
    patience: int = Field(default=ROUTER.patience, ge=1)
    # Early stopping split, inside the training prompts.
    val_fraction: float = Field(default=ROUTER.val_fraction, ge=0.0, lt=1.0)
    # Router metrics (the report's router against the baselines): k-fold cross-validation over
    # every calibration prompt; 0 = one held-out split of `test_fraction` instead.
    cv_folds: int = Field(default=ROUTER.cv_folds, ge=0)
    # Calibration prompts held out to measure the router when cv_folds is 0.
    test_fraction: float = Field(default=ROUTER.test_fraction, ge=0.0, le=0.5)
    # After measuring, train the router that routes on every calibration prompt (more data).
    refit: bool = True
    quality_floor: QualityFloorConfig = Field(default_factory=QualityFloorConfig)

    def key_dict(self) -> dict[str, Any]:
        """The settings as the router's train key sees them: a quality floor that is off changes
        no label, so it stays out (keys of runs made before it existed stay the same)."""
        from persyn.scoring.labels import GATE_VERSION

        d = self.model_dump(mode="json")
        if not self.quality_floor.enabled:
            d.pop("quality_floor")
        else:
            d["quality_floor"]["rule"] = GATE_VERSION  # a new gate rule gives new labels
        return d

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("cross-validation needs at least 2 folds (0 = one held-out split instead)")
        return v


class TeacherCap(_Section):
    max_share: float | None = Field(default=None, gt=0.0, le=1.0)
    max_generations: int | None = Field(default=None, ge=0)
    max_cost: float | None = Field(default=None, ge=0.0)


class RoutingConfig(_Section):
    """Route every prompt to argmax of the router, or under caps (an assignment maximising the
    total router score). Caps and budget apply to the prompts outside the calibration set: those
    are the new generations; calibration prompts already hold every teacher's response."""

    caps: dict[str, TeacherCap] = Field(default_factory=dict)
    budget: float | None = Field(default=None, ge=0.0)
    # Calibration prompts: `router` (the method's step 6: route every prompt by the router) or `best`
    # (the teacher with the best combined label; their responses are already paid for).
    calibration_prompts: Literal["router", "best"] = "router"


class BaselinesConfig(_Section):
    car_beta: float = Field(default=CAR_BETA, ge=0.0)
    mix_share: float = Field(default=MIX_SHARE, ge=0.0, le=1.0)
    # Mix blends the strong teacher with this one; default: the teacher with the best CAR other
    # than the strong one.
    mix_weak: str | None = None
    knn_k: int = Field(default=KNN_K, ge=1)


class OutputConfig(_Section):
    dir: Path = Path("runs/persyn")
    formats: list[Literal["messages", "prompt_completion", "sharegpt", "parquet", "hf"]] = Field(
        default_factory=lambda: list(EXPORT_FORMATS), min_length=1
    )
    dataset_name: str = Field(default="persyn", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    # Example rows shown in the report.
    samples: int = Field(default=12, ge=0)

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, formats: list[str]) -> list[str]:
        return list(dict.fromkeys(formats))


class Config(_Section):
    seed: int = 0
    prompts: PromptsConfig
    student: StudentConfig
    teachers: list[TeacherConfig] = Field(min_length=2)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    # The student's side (persyn train / eval / compare): keyed by their own content
    # (students/<strategy>/train.json, eval rows), so they stay out of the manifest.
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)

    @field_validator("teachers")
    @classmethod
    def _unique_names(cls, teachers: list[TeacherConfig]) -> list[TeacherConfig]:
        seen: set[str] = set()
        for t in teachers:
            if t.name in seen:
                raise ValueError(f"teacher name {t.name!r} is used twice; names must be unique")
            seen.add(t.name)
        return teachers

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = self.teacher_names
        problems: list[tuple[tuple, str]] = []
        for name, cap in self.routing.caps.items():
            if name not in names:
                problems.append(
                    (("routing", "caps", name), f"unknown teacher {name!r}; teachers are {names}")
                )
            elif cap.max_cost is not None and self.teacher(name).cost_per_1k_tokens is None:
                problems.append(
                    (
                        ("routing", "caps", name, "max_cost"),
                        f"needs teacher {name!r} to have cost_per_1k_tokens",
                    )
                )
        if self.routing.budget is not None:
            unpriced = [t.name for t in self.teachers if t.cost_per_1k_tokens is None]
            if unpriced:
                problems.append(
                    (
                        ("routing", "budget"),
                        f"a budget needs cost_per_1k_tokens for every teacher; missing: {unpriced}",
                    )
                )
        if self.baselines.mix_weak is not None and self.baselines.mix_weak not in names:
            problems.append(
                (
                    ("baselines", "mix_weak"),
                    f"unknown teacher {self.baselines.mix_weak!r}; teachers are {names}",
                )
            )
        q = self.quality
        if q.method == "auto" and q.engine is None and self.prompts.answer_field is None:
            problems.append(
                (
                    ("quality", "method"),
                    "'auto' needs quality.judge or quality.reward for prompts without reference answers "
                    "(or set prompts.answer_field and method 'answers')",
                )
            )
        if q.method == "answers" and self.prompts.answer_field is None:
            problems.append((("quality", "method"), "'answers' needs prompts.answer_field"))
        for i, spec in enumerate([*self.teachers, self.student]):
            where = ("teachers", i) if i < len(self.teachers) else ("student",)
            if spec.engine == "openai" and not spec.base_url:
                problems.append(
                    ((*where, "base_url"), "engine 'openai' needs base_url (e.g. http://host:8000/v1)")
                )
        problems += self._pool_problems()
        if problems:
            raise KeyedProblems(problems)
        return self

    def _pool_problems(self) -> list[tuple[tuple, str]]:
        """executor.pools: every key names a teacher or a role this config has, and two names that
        share one model (hence one pool) do not ask for different resources."""
        problems: list[tuple[tuple, str]] = []
        roles = self.engine_roles()
        for name in self.executor.pools:
            loc = ("executor", "pools", name)
            if name in POOL_ROLES and name in self.teacher_names:
                problems.append(
                    (loc, f"{name!r} is both a teacher name and the {name} role; rename the teacher")
                )
            elif name not in roles:
                if name in POOL_ROLES:  # judge or reward: the student always exists
                    msg = f"this config has no {name} model (quality.{name} is not set)"
                else:
                    msg = f"unknown pool {name!r}; pools are teacher names {self.teacher_names} or " + (
                        ", ".join(repr(r) for r in POOL_ROLES if r in roles)
                    )
                problems.append((loc, msg))
        by_spec: dict[str, list[str]] = {}
        for name, spec in roles.items():
            by_spec.setdefault(spec.model_dump_json(), []).append(name)
        for names in by_spec.values():
            given = [n for n in names if n in self.executor.pools]
            if len({self.executor.pool(n).model_dump_json() for n in given}) > 1:
                problems.append(
                    (
                        ("executor", "pools", given[-1]),
                        f"{' and '.join(names)} are one model and so one pool; "
                        f"give {', '.join(given)} the same resources (or set only one)",
                    )
                )
        return problems

    def engine_roles(self) -> dict[str, EngineSpec]:
        """Every model this config runs, by pool name: teacher names, `student`, and `judge` or
        `reward` when set. Names that share a spec share one loaded engine (one Ray pool)."""
        roles = {t.name: t.engine_spec() for t in self.teachers}
        for role, spec in (
            ("student", self.student.engine_spec()),
            ("judge", self.quality.judge),
            ("reward", self.quality.reward),
        ):
            if spec is not None:
                roles.setdefault(role, spec)  # a teacher of that name keeps it (see _pool_problems)
        return roles

    @property
    def teacher_names(self) -> list[str]:
        return [t.name for t in self.teachers]

    def teacher(self, name: str) -> TeacherConfig:
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"unknown teacher {name!r}; teachers are {self.teacher_names}")

    def teacher_spec(self, name: str) -> EngineSpec:
        return self.teacher(name).engine_spec()

    def generation_for(self, name: str) -> GenerationConfig:
        return self.teacher(name).generation or self.generation

    def family_teachers(self) -> list[str]:
        """The teachers of the student's family (`student.family`), for the Family-Strong baseline."""
        fam = self.student.family
        return [] if fam is None else [t.name for t in self.teachers if t.family == fam]

    def default_strategies(self, oracle: bool = False) -> list[str]:
        """The strategies built and compared when none are named (persyn.defaults): family-strong
        when a teacher shares the student's family, the full oracle only with `oracle`."""
        return default_strategies(bool(self.family_teachers()), oracle)

    def baseline_settings(self) -> dict[str, Any]:
        """The keyword arguments of `persyn.router.baselines.build_baselines` this config sets
        (the same for the report's measurement and the strategies' datasets)."""
        b = self.baselines
        return {
            "seed": self.seed,
            "car_beta": b.car_beta,
            "mix_share": b.mix_share,
            "mix_weak": b.mix_weak,
            "knn_k": b.knn_k,
            "family": self.family_teachers(),
        }

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def manifest_dict(self) -> dict[str, Any]:
        """The part of the config that changes results: what the run directory's manifest records
        and hashes. Leaves out where and how work runs (output, executor, skip_bad_rows, the
        engines' batch size and batch-invariant kernels)."""
        d = without_speed_settings(self.to_dict())
        d.pop("output", None)
        d.pop("executor", None)
        d.pop("train", None)
        d.pop("eval", None)
        d["prompts"].pop("skip_bad_rows", None)
        d["prompts"].pop("answer_timeout_s", None)  # a safety limit, not what a verdict means
        # Settings that are off change nothing, so they stay out: a run made before they existed
        # (or with them off) keeps its hash.
        for gen in [d["generation"], *(t["generation"] for t in d["teachers"] if t.get("generation"))]:
            if not gen["regenerate_cut"]["enabled"]:
                gen.pop("regenerate_cut")
        if not self.router.quality_floor.enabled:
            d["router"].pop("quality_floor")
        if not self.filters.enabled:
            d.pop("filters")
        # How the router is measured (not the router that routes); at its default left out, so run
        # directories made before it existed open as they are.
        if d["router"].get("cv_folds") == RouterConfig.model_fields["cv_folds"].default:
            d["router"].pop("cv_folds")
        # Changes results only through the quality keys (which name it); at its default left out too.
        if d["quality"].get("judge_reference") == QualityConfig.model_fields["judge_reference"].default:
            d["quality"].pop("judge_reference")
        # Relative to the run directory: a project moved or copied whole keeps its identity.
        try:
            d["prompts"]["path"] = os.path.relpath(self.prompts.path, self.output.dir)
        except ValueError:  # another drive (Windows)
            pass
        return d

    def hash(self) -> str:
        """The hash the run directory's manifest records for this config (`config_hash`)."""
        return config_hash(self.manifest_dict())


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`["calibration.size=64", "teachers.0.batch_size=4"]` -> {dotted key: YAML-parsed value}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key.path=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, validate and return a config. Relative paths inside it are relative to the file.
    `overrides` maps dotted keys (`router.alpha`, `teachers.0.model`) to values, applied first."""
    path = Path(path)
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections (prompts, student, teachers...)")
    for key, value in (overrides or {}).items():
        try:
            _set_dotted(data, key, value)
        except (KeyError, IndexError, TypeError) as e:
            raise ConfigError(f"{path}: cannot apply override {key}={value!r}: {e}") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(path, text, e, Config)) from None
    base = path.parent
    if not config.prompts.path.is_absolute():
        config.prompts.path = (base / config.prompts.path).resolve()
    if not config.output.dir.is_absolute():
        config.output.dir = (base / config.output.dir).resolve()
    for spec in config.eval.sets:
        if not spec.path.is_absolute():
            spec.path = (base / spec.path).resolve()
    return config


def _set_dotted(data: dict, key: str, value: Any) -> None:
    node: Any = data
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
