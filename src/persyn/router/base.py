"""The interface every router and baseline implements (small, RouteLLM-style).

`scores(prompts, embeddings=None)` -> n_prompts x n_teachers, higher is better;
`route(prompts)` -> one teacher name per prompt (the argmax; ties go to the earlier teacher).
Routers that work on prompt embeddings (the trained router, kNN) take precomputed `embeddings`
so the pipeline can encode once and reuse the vectors for every router it compares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class Router(ABC):
    #: Short name used in reports ("router", "random", "strongest", ...).
    name: str
    #: Teacher names, in the column order of `scores`.
    teachers: list[str]

    @abstractmethod
    def scores(self, prompts: Sequence[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        """n_prompts x n_teachers float matrix, higher = better suited."""

    def route_indices(self, prompts: Sequence[str], *, embeddings: np.ndarray | None = None) -> np.ndarray:
        s = self.scores(prompts, embeddings=embeddings)
        return np.argmax(s, axis=1) if len(prompts) else np.zeros(0, dtype=np.int64)

    def route(self, prompts: Sequence[str], *, embeddings: np.ndarray | None = None) -> list[str]:
        """One teacher name per prompt."""
        return [self.teachers[i] for i in self.route_indices(prompts, embeddings=embeddings)]

    def _check_embeddings(self, prompts: Sequence[str], embeddings: np.ndarray | None) -> None:
        if embeddings is not None and len(embeddings) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(embeddings)} embeddings")
