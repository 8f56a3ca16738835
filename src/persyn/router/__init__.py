"""The router: prompt encoder + Bradley-Terry coefficient head, its baselines, metrics and files.

Modules: `encoders` (MiniLM or any HF model, embedding cache), `model` (head, training, splits),
`baselines` (random, strongest, CAR, Mix, family-strong, kNN, oracle, and `build_baselines`, the one
function that fits them), `metrics`, `matrix` (import score files), `io` (safetensors + JSON). The
`persyn router train|eval` commands are in `persyn.cli.router`.

Names are imported lazily, so `import persyn.cli.router` (the CLI) does not pay for torch.
"""

from __future__ import annotations

from persyn.util.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".base": ["Router"],
        ".baselines": [
            "Baselines",
            "CARRouter",
            "FixedRouter",
            "KNNRouter",
            "MixRouter",
            "OracleError",
            "OracleRouter",
            "RandomRouter",
            "StrongestRouter",
            "build_baselines",
            "car_scores",
            "mix_weak_teacher",
        ],
        ".encoders": [
            "DEFAULT_ENCODER",
            "EmbeddingCache",
            "MemoryEmbeddingCache",
            "PromptEncoder",
            "embed_prompts",
            "load_encoder",
        ],
        ".io": ["RouterFileError", "TeacherMismatchError", "load_router", "save_router"],
        ".matrix": ["BadRow", "ScoreFileError", "ScoreMatrix", "load_score_matrix"],
        ".metrics": ["compare", "evaluate_scores"],
        ".model": ["BTRouter", "TrainConfig", "TrainReport", "holdout_mask", "prompt_hash", "train_router"],
    },
)
