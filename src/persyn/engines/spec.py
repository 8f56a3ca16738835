"""How a model is named and loaded: the part of the config an engine needs, and where a model
name's files are.

A model name is a local folder, a hub id, or `scheme:name` for a model source registered under
the `persyn.models` entry points (pyproject.toml); persyn registers its offline zoo as `zoo:`. Engines
call `resolve_model` and so never import a source: the packaging wires them together.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from persyn.defaults import DType

EngineKind = Literal["transformers", "vllm", "openai"]


class EngineSpec(BaseModel):
    """Everything needed to build an engine for one model.

    `model` is a zoo alias (`zoo:smollm2-135m-instruct`), a local folder, or a hub id.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    engine: EngineKind = "transformers"
    # "auto": the tokenizer's chat template if it has one, else the completion template.
    # "chat" requires a chat template; "completion" uses `completion_template`.
    template: Literal["auto", "chat", "completion"] = "auto"
    completion_template: str = "Question: {prompt}\nAnswer:"
    system_prompt: str | None = None
    # Judge prompt for `score` with a causal LM; must contain {prompt} and {response}.
    judge_template: str | None = None
    dtype: DType = "auto"
    device: str = "auto"
    batch_size: int = Field(default=8, ge=1)
    max_model_len: int | None = Field(default=None, ge=16)
    trust_remote_code: bool = False
    # transformers engine: row-by-row attention so a row's result does not depend on its batch
    # (None: on for CPU, off for GPU; costs a few percent of CPU generation, docs/engines.md).
    batch_invariant: bool | None = None
    # OpenAI-compatible servers. The key itself never appears in a config: name the variable.
    base_url: str | None = None
    api_key_env: str | None = None
    served_model_name: str | None = None
    max_concurrency: int = Field(default=16, ge=1)
    requests_per_second: float | None = Field(default=None, gt=0)
    request_timeout_s: float = Field(default=600.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    # vLLM in-process.
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # Further keyword arguments for `vllm.LLM` (e.g. enforce_eager, kv_cache_memory_bytes,
    # max_num_seqs, quantization); the fields above win where both name the same setting.
    vllm_args: dict[str, Any] = Field(default_factory=dict)


@cache
def _sources() -> dict[str, Callable[[str], str]]:
    return {ep.name: ep.load() for ep in entry_points(group="persyn.models")}


def _source(name: str) -> Callable[[str], str] | None:
    scheme, sep, _ = name.partition(":")
    return _sources().get(scheme) if sep else None


def resolve_model(name: str) -> str:
    """What to load for a model name: a `scheme:name` goes to its source (the zoo converts its
    models on first use), anything else (a folder, a hub id) is itself."""
    source = _source(name)
    return str(source(name)) if source is not None else name


def local_model_path(name: str) -> str | None:
    """A folder holding the model's files (tokenizer, config) on this machine, or None (a hub id)."""
    if _source(name) is not None:
        return resolve_model(name)
    return name if os.path.isdir(name) else None


def model_identity(name: str) -> str:
    """How store keys name a model: a local folder by its absolute path; a source's name (whose
    folder differs per machine) or a hub id as written."""
    return os.path.abspath(name) if _source(name) is None and os.path.isdir(name) else name
