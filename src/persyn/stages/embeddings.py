"""Prompt embeddings with the router's encoder, cached in the run store (each prompt encoded once
per encoder, whichever stage asks first: diverse calibration, router training or routing)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from persyn.stages.context import RunContext

#: Prompts read from the store and looked up in the cache at a time (bounded memory at 1M prompts).
CHUNK = 8192


def load_router_encoder(ctx: RunContext):
    from persyn.router.encoders import load_encoder

    r = ctx.config.router
    return load_encoder(r.encoder, pooling=r.pooling, max_length=r.max_length, device=r.device)


def embed_ids(ctx: RunContext, ids: Sequence[str], *, stage: str, encoder=None) -> np.ndarray:
    """n x dim float32 embeddings of the prompts `ids` (in that order)."""
    from persyn.router.encoders import embed_prompts

    encoder = encoder or load_router_encoder(ctx)
    ids = list(ids)
    cache = ctx.store.embedding_cache()
    out = np.zeros((len(ids), encoder.dim), dtype=np.float32)
    with ctx.ui.task(f"{stage} · embeddings", total=len(ids)) as advance:
        for s in range(0, len(ids), CHUNK):
            texts = [p.text for p in ctx.store.get_prompts(ids[s : s + CHUNK])]
            out[s : s + len(texts)] = embed_prompts(encoder, texts, cache, chunk_size=512)
            advance(len(texts))
    return out
