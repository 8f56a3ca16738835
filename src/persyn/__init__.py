"""persyn: personalised multi-teacher distillation data (PerSyn, "Route then Generate").

    from persyn import Pipeline
    with Pipeline.from_config("persyn.yaml") as pipe:
        summary = pipe.run()

Names are imported lazily so that `import persyn` (and the CLI's start) stays cheap.
"""

from __future__ import annotations

from persyn.util.lazy import lazy_exports

__version__ = "0.1.0"

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "persyn.pipeline": ["Pipeline", "RunSummary"],
        "persyn.stages.context": ["StageError"],
        "persyn.config": ["Config", "ConfigError", "load_config"],
        "persyn.plan": ["Plan", "make_plan"],
        "persyn.defaults": ["STRATEGIES"],
        "persyn.store": ["RunStore"],
        "persyn.util.errors": ["PersynError"],
    },
    "__version__",
)
