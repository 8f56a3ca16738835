"""persyn: personalised multi-teacher distillation data (PerSyn, "Route then Generate").

    from persyn import Pipeline
    with Pipeline.from_config("persyn.yaml") as pipe:
        summary = pipe.run()

Names are imported lazily so that `import persyn` (and the CLI's start) stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Pipeline": "persyn.pipeline",
    "RunSummary": "persyn.pipeline",
    "StageError": "persyn.stages.context",
    "Config": "persyn.config",
    "ConfigError": "persyn.config",
    "load_config": "persyn.config",
    "Plan": "persyn.plan",
    "make_plan": "persyn.plan",
    "STRATEGIES": "persyn.stages.strategies",
    "RunStore": "persyn.store",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persyn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
