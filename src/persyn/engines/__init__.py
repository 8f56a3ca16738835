"""Engines: the only code that touches a model. See `base.Engine` for the protocol."""

from __future__ import annotations

from persyn.engines.base import (
    ContextLengthError,
    Engine,
    EngineError,
    Generation,
    GenerationParams,
)
from persyn.engines.spec import EngineSpec

__all__ = [
    "ContextLengthError",
    "Engine",
    "EngineError",
    "EngineSpec",
    "Generation",
    "GenerationParams",
    "load_engine",
]


def load_engine(spec: EngineSpec) -> Engine:
    """Build the engine a spec names. Back ends are imported lazily: vLLM and the HTTP client are
    optional, and importing torch/transformers is not free."""
    if spec.engine == "transformers":
        from persyn.engines.transformers_engine import TransformersEngine

        return TransformersEngine(spec)
    if spec.engine == "openai":
        from persyn.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(spec)
    if spec.engine == "vllm":
        from persyn.engines.vllm_engine import VLLMEngine

        return VLLMEngine(spec)
    raise EngineError(f"unknown engine {spec.engine!r}")
