"""Shared fixtures. Keep each group under its own heading; expensive objects are session-scoped.

Engines: a model loads once per session. Tests that use a zoo engine (`smollm_engine`,
`gemma_engine`, `qwen_engine`) must be marked `zoo`: the model is converted on first use (a one-off
of about a minute per model, cached in PERSYN_CACHE) and loads in seconds afterwards.
Engines are shared: a test that changes one (batch size, chunking) must use its own instead.
"""

from __future__ import annotations

import pytest

# --------------------------------------------------------------------------------------------------
# engines (persyn.engines, persyn.zoo)


def make_engine(model: str, **spec):
    """A fresh TransformersEngine for `model` (a zoo alias or a path); spec fields as keywords."""
    from persyn.engines.spec import EngineSpec
    from persyn.engines.transformers_engine import TransformersEngine

    return TransformersEngine(EngineSpec(model=model, **spec))


@pytest.fixture(scope="session")
def tiny_engine_factory():
    """`make(seed=0, **spec)`: an engine on the tiny random Llama `zoo:tiny-llama-s{seed}`, float32
    unless `dtype` is given. One engine per distinct arguments, shared across the session; different
    seeds act as different teachers."""
    engines: dict = {}

    def make(seed: int = 0, **spec):
        spec.setdefault("dtype", "float32")
        key = (seed, tuple(sorted(spec.items())))
        if key not in engines:
            engines[key] = make_engine(f"zoo:tiny-llama-s{seed}", **spec)
        return engines[key]

    yield make
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="session")
def tiny_engine(tiny_engine_factory):
    """The tiny random Llama (seed 0, float32, SmolLM2's tokenizer and chat template): fast and exact."""
    return tiny_engine_factory(0)


@pytest.fixture(scope="session")
def smollm_engine():
    """SmolLM2-135M-Instruct, default spec (dtype auto: bf16 on CPUs with native bf16, else float32):
    the usual student."""
    engine = make_engine("zoo:smollm2-135m-instruct")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def gemma_engine():
    """Gemma-3-270M base (completion template), default spec (dtype auto): a teacher."""
    engine = make_engine("zoo:gemma3-270m")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def qwen_engine():
    """Qwen2.5-Coder-0.5B-Instruct, default spec (dtype auto): the strongest teacher and LM judge."""
    engine = make_engine("zoo:qwen2.5-coder-0.5b-instruct")
    yield engine
    engine.close()
