"""How a model is named and loaded: the part of the config an engine needs, and nothing else."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
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
