"""The run config: one YAML file, validated by pydantic, with errors that name the key and line.

Every section is a model with `extra="forbid"`, so a typo is an error instead of a silent default.
The shapes here are the public contract of `persyn run`; keep them stable once shipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from persyn.engines.base import GenerationParams
from persyn.engines.spec import EngineSpec

__all__ = [
    "CalibrationConfig",
    "Config",
    "ConfigError",
    "GenerationConfig",
    "PromptsConfig",
    "QualityConfig",
    "RouterConfig",
    "RoutingConfig",
    "TeacherConfig",
    "load_config",
]


class ConfigError(ValueError):
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


class Cost(_Section):
    """Price per 1,000 tokens, in whatever currency the user thinks in."""

    input: float = Field(default=0.0, ge=0.0)
    output: float = Field(default=0.0, ge=0.0)


class TeacherConfig(EngineSpec):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    # Declared families enable the Family-Strong baseline (the strongest teacher of the student's family).
    family: str | None = None
    # Per-teacher overrides of the top-level `generation` section.
    generation: GenerationConfig | None = None
    cost_per_1k_tokens: Cost | None = None


class StudentConfig(EngineSpec):
    family: str | None = None


class QualityConfig(_Section):
    """How response quality r_q is measured (PAPER.md step 2).

    `auto`: verifiable answers where a prompt has a reference answer, else the judge (or reward model).
    """

    method: Literal["auto", "answers", "judge", "reward"] = "auto"
    answers: Literal["numeric", "exact"] = "numeric"
    judge: EngineSpec | None = None
    reward: EngineSpec | None = None

    @model_validator(mode="after")
    def _needs_a_model(self) -> QualityConfig:
        if self.method == "judge" and self.judge is None:
            raise ValueError("quality.method is 'judge' but quality.judge names no model")
        if self.method == "reward" and self.reward is None:
            raise ValueError("quality.method is 'reward' but quality.reward names no model")
        if self.judge is not None and self.reward is not None:
            raise ValueError("set quality.judge or quality.reward, not both")
        return self


class CalibrationConfig(_Section):
    """The subset every teacher answers. `diverse` = k-means over prompt embeddings."""

    size: int = Field(default=2500, ge=4)
    selection: Literal["random", "diverse"] = "random"


class RouterConfig(_Section):
    """Combined label (PAPER.md Eq. 2) and the Bradley-Terry router (Eq. 3)."""

    alpha: float = Field(default=0.4, ge=0.0, le=1.0)
    normalisation: Literal["zscore", "minmax"] = "zscore"
    encoder: str = "zoo:minilm-l6-v2"
    pooling: Literal["mean", "last"] = "mean"
    fine_tune: bool = False
    hidden_dim: int = Field(default=256, ge=1)
    epochs: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    patience: int = Field(default=20, ge=1)


class TeacherCap(_Section):
    max_share: float | None = Field(default=None, gt=0.0, le=1.0)
    max_generations: int | None = Field(default=None, ge=0)
    max_cost: float | None = Field(default=None, ge=0.0)


class RoutingConfig(_Section):
    """Route every prompt to argmax of the router, or under caps (an assignment maximising the
    total router score)."""

    caps: dict[str, TeacherCap] = Field(default_factory=dict)
    budget: float | None = Field(default=None, ge=0.0)


class BaselinesConfig(_Section):
    car_beta: float = Field(default=3.0, ge=0.0)
    mix_share: float = Field(default=0.2, ge=0.0, le=1.0)
    # Mix blends the strong teacher with this one; default: the teacher with the best CAR.
    mix_weak: str | None = None
    knn_k: int = Field(default=10, ge=1)


class OutputConfig(_Section):
    dir: Path = Path("runs/persyn")
    formats: list[Literal["messages", "prompt_completion", "sharegpt", "parquet", "hf"]] = Field(
        default_factory=lambda: ["messages", "prompt_completion", "sharegpt", "parquet", "hf"]
    )
    dataset_name: str = "persyn"


class ExecutorConfig(_Section):
    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    # Rows per store transaction: a crash loses at most this many rows of work.
    batch_size: int = Field(default=32, ge=1)


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
    output: OutputConfig = Field(default_factory=OutputConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

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
    def _references_known_teachers(self) -> Config:
        names = self.teacher_names
        for name in self.routing.caps:
            if name not in names:
                raise ValueError(f"routing.caps names unknown teacher {name!r}; teachers are {names}")
        if self.baselines.mix_weak is not None and self.baselines.mix_weak not in names:
            raise ValueError(f"baselines.mix_weak names unknown teacher {self.baselines.mix_weak!r}")
        if self.quality.method == "auto" and self.quality.judge is None and self.quality.reward is None:
            if self.prompts.answer_field is None:
                raise ValueError(
                    "quality.method 'auto' needs quality.judge or quality.reward for prompts "
                    "without reference answers (or set prompts.answer_field and method 'answers')"
                )
        if self.quality.method == "answers" and self.prompts.answer_field is None:
            raise ValueError("quality.method is 'answers' but prompts.answer_field is not set")
        return self

    @property
    def teacher_names(self) -> list[str]:
        return [t.name for t in self.teachers]

    def teacher(self, name: str) -> TeacherConfig:
        for t in self.teachers:
            if t.name == name:
                return t
        raise KeyError(f"unknown teacher {name!r}; teachers are {self.teacher_names}")

    def generation_for(self, name: str) -> GenerationConfig:
        return self.teacher(name).generation or self.generation

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        """A stable hash of the whole config (the run manifest checks it on resume)."""
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, validate and return a config. Relative paths inside it are relative to the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections (prompts, student, teachers...)")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, text, e)) from None
    base = path.parent
    if not config.prompts.path.is_absolute():
        config.prompts.path = base / config.prompts.path
    if not config.output.dir.is_absolute():
        config.output.dir = base / config.output.dir
    return config


def _set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _format_validation_error(path: Path, text: str, error: ValidationError) -> str:
    lines = _key_lines(text)
    out = [f"{path}: invalid config ({error.error_count()} problem{'s' if error.error_count() > 1 else ''})"]
    for err in error.errors():
        loc = tuple(err["loc"])
        key = _dotted(loc)
        line = _nearest_line(lines, loc)
        where = f"line {line}: " if line else ""
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {key!r}"
        elif err["type"] == "missing":
            msg = f"missing required key {key!r}"
        else:
            msg = f"{key}: {err['msg']}" if key else err["msg"]
        out.append(f"  {where}{msg}")
    return "\n".join(out)


def _dotted(loc: tuple) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts)


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line, for error messages."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    found: dict[tuple, int] = {}

    def walk(node: yaml.Node, loc: tuple) -> None:
        found[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                found[loc + (k.value,)] = k.start_mark.line + 1
                walk_child(v, loc + (k.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk_child(v, loc + (i,))

    def walk_child(node: yaml.Node, loc: tuple) -> None:
        line = found.get(loc)
        walk(node, loc)
        if line is not None:
            found[loc] = line  # keep the key's own line, not its value's

    if root is not None:
        walk(root, ())
    return found


def _nearest_line(lines: dict[tuple, int], loc: tuple) -> int | None:
    # A missing key has no line: point at its parent section instead.
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
