"""The router: prompt encoder + Bradley-Terry coefficient head, its baselines, metrics and files.

Modules: `encoders` (MiniLM or any HF model, embedding cache), `model` (head, training, splits),
`baselines` (random, strongest, CAR, Mix, kNN, oracle), `metrics`, `matrix` (import score files),
`io` (safetensors + JSON), `synthetic` (test data). The `persyn router train|eval` commands
are in `persyn.cli.router`.

Names are imported lazily, so `import persyn.cli.router` (the CLI) does not pay for torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Router": "base",
    "CARRouter": "baselines",
    "KNNRouter": "baselines",
    "MixRouter": "baselines",
    "OracleError": "baselines",
    "OracleRouter": "baselines",
    "RandomRouter": "baselines",
    "StrongestRouter": "baselines",
    "car_scores": "baselines",
    "DEFAULT_ENCODER": "encoders",
    "EmbeddingCache": "encoders",
    "MemoryEmbeddingCache": "encoders",
    "PromptEncoder": "encoders",
    "embed_prompts": "encoders",
    "load_encoder": "encoders",
    "RouterFileError": "io",
    "TeacherMismatchError": "io",
    "load_router": "io",
    "save_router": "io",
    "BadRow": "matrix",
    "ScoreFileError": "matrix",
    "ScoreMatrix": "matrix",
    "load_score_matrix": "matrix",
    "compare": "metrics",
    "evaluate_scores": "metrics",
    "BTRouter": "model",
    "TrainConfig": "model",
    "TrainReport": "model",
    "holdout_mask": "model",
    "prompt_hash": "model",
    "train_router": "model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'persyn.router' has no attribute {name!r}")
    return getattr(importlib.import_module(f"persyn.router.{module}"), name)


def __dir__() -> list[str]:
    return __all__
