"""A batch-invariant attention for CPU: a row's result does not depend on the rows around it.

Why: in bf16, a row's result changes with the padding around it (SmolLM2, last-token logits of a
prompt alone vs left-padded next to a longer one: up to 0.5-0.8 apart with "sdpa" or bf16 "eager").
Attention reduces over the keys, and padding changes their number, hence how the kernels group the
terms of each sum and how they round. Sampled and greedy texts then depend on batch composition,
and loglik on padding.

How: each row's attention runs on its own tokens only. The mask tells which queries and keys of a
row are real (``row_spans``: padding cut off, once per forward pass), and the row's slice goes
through ``scaled_dot_product_attention`` in float32, with no mask when decoding (a new token sees
all its keys), ``is_causal`` for a whole sequence, or the mask's slice (sliding windows). The
kernel then sees the same tensors, shaped the same, whatever the batch: the result is the same to
the bit. The other matmuls, the linear layers, round a row differently by how many rows they
multiply (bf16 and float32, by CPU: linear.py), so the engine runs them in row blocks of a fixed
size. With both, texts and logliks were bit-identical across batch compositions in every check we
ran (tests/test_transformers_engine.py, tests/test_attention.py, tests/test_linear.py).

Attention this path does not cover (soft-capping, attention sinks, unknown arguments, no mask)
runs in float64 over the whole batch and is rounded back: sums grouped differently then differ
by ~1e-16 relative, far below bf16/float32 resolution, so the rounded result is the same unless
the exact value sits within ~1e-16 of a rounding boundary (odds ~1e-9 per value). It is the
eager attention's maths (scaling, soft-capping, additive mask, softmax, weighted values), or the
module's own eager function in float64. Cost of both: docs/engines.md.
"""

from __future__ import annotations

import sys
import weakref

import torch

EXACT_ATTENTION = "persyn_batch_invariant"
# Bytes of float64 attention scores per query chunk.
_SCORE_BYTES = 64 * 2**20
# Keyword arguments that the eager maths below covers, or that do not change it (the mask carries
# causality and sliding windows).
_KNOWN_KWARGS = {
    "scaling", "softcap", "dropout", "sliding_window", "position_ids", "cache_position", "use_cache",
    "output_attentions", "is_causal", "layer_idx",
}  # fmt: skip


def _gqa_attention(q, k, v, mask, scaling: float, softcap: float | None) -> torch.Tensor:
    """Eager attention. q (B, H, L, D); k, v (B, KVH, K, D); mask (B, 1 or H, L, K) additive.
    Returns (B, L, H, D). Query head h reads key/value head h // (H // KVH)."""
    batch, heads, q_len, dim = q.shape
    kv_heads, n_keys = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    qg = q.reshape(batch, kv_heads, groups * q_len, dim)
    scores = torch.matmul(qg, k.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(batch, kv_heads, groups, q_len, n_keys)
    if mask is not None:
        scores = scores + (mask[:, :, None] if mask.shape[1] == 1 else mask.view(scores.shape))
    weights = torch.softmax(scores, dim=-1).view(batch, kv_heads, groups * q_len, n_keys)
    out = torch.matmul(weights, v)  # (B, KVH, G * L, D)
    return out.view(batch, heads, q_len, dim).transpose(1, 2)


def _model_eager(module: torch.nn.Module):
    """The eager attention of the module's own model file; Llama's as a fallback."""
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        from transformers.models.llama.modeling_llama import eager_attention_forward as fn
    return fn


# Row spans of the masks seen lately, by mask object: every layer of one forward pass gets the same
# mask (or one of two, with sliding windows), so the spans are worked out once per forward pass.
# Weak references: a finished pass's masks are freed as usual.
_SPANS: dict[int, tuple[weakref.ref, list[tuple[int, int, int, int, str]]]] = {}


def row_spans(mask: torch.Tensor) -> list[tuple[int, int, int, int, str]]:
    """For each row of an additive mask (B, 1, Q, K): (q0, q1, k0, k1, kind), the queries [q0, q1)
    and keys [k0, k1) that the row really has (padding cut off), and what the mask is inside them:
    "full" (every query sees every key: decoding), "causal" (exactly causal: a whole sequence), or
    "mask" (anything else, e.g. a sliding window; the mask slice is passed on).

    The queries are the last Q of the K positions, so query j is position K - Q + j, and it is a
    real token if that position is a key some query sees. The span and the mask inside it depend
    only on the row's own tokens, never on how much padding the batch added."""
    hit = _SPANS.get(id(mask))
    if hit is not None and hit[0]() is mask:
        return hit[1]
    q_len, k_len = mask.shape[-2], mask.shape[-1]
    visible = (mask > torch.finfo(mask.dtype).min).any(dim=1)  # (B, Q, K)
    keys = visible.any(dim=1)  # (B, K): keys somebody sees
    queries = keys[:, k_len - q_len :]
    spans = []
    for row, (k_row, q_row) in enumerate(zip(keys.tolist(), queries.tolist(), strict=True)):
        if True not in q_row:
            spans.append((0, 0, 0, 0, "full"))  # no real token (cannot happen with real inputs)
            continue
        k0, k1 = k_row.index(True), k_len - k_row[::-1].index(True)
        q0, q1 = q_row.index(True), q_len - q_row[::-1].index(True)
        inside = visible[row, q0:q1, k0:k1]
        if bool(inside.all()):
            kind = "full"
        elif q1 - q0 == k1 - k0 and torch.equal(inside, torch.ones_like(inside).tril()):
            kind = "causal"
        else:
            kind = "mask"
        spans.append((q0, q1, k0, k1, kind))
    if len(_SPANS) >= 8:
        _SPANS.clear()
    _SPANS[id(mask)] = (weakref.ref(mask), spans)
    return spans


def _per_row_attention(q, k, v, mask, scaling: float) -> torch.Tensor:
    """Attention row by row on each row's own span, in float32: a row's result is computed from
    the same values, shaped the same, whatever it is batched with. Returns (B, Q, H, D)."""
    batch, heads, q_len, _ = q.shape
    # One float32 copy per tensor for the whole batch: per-row copies cost more than the kernel.
    q32, k32, v32 = q.float(), k.float(), v.float()
    gqa = heads != k.shape[1]
    spans = row_spans(mask)
    rows = []
    for row, (q0, q1, k0, k1, kind) in enumerate(spans):
        if q1 == q0:
            rows.append(None)
            continue
        rows.append(
            torch.nn.functional.scaled_dot_product_attention(
                q32[row : row + 1, :, q0:q1],
                k32[row : row + 1, :, k0:k1],
                v32[row : row + 1, :, k0:k1],
                attn_mask=mask[row : row + 1, :, q0:q1, k0:k1].float() if kind == "mask" else None,
                is_causal=kind == "causal",
                scale=scaling,
                enable_gqa=gqa,
            )
        )
    if all(span[:2] == (0, q_len) for span in spans):  # every query real (decoding): one copy
        return torch.cat(rows).transpose(1, 2).to(q.dtype)
    out = q.new_zeros(batch, q_len, heads, v.shape[-1])
    for row, ((q0, q1, *_), res) in enumerate(zip(spans, rows, strict=True)):
        if res is not None:
            out[row, q0:q1] = res[0].transpose(0, 1)
    return out


def batch_invariant_attention(module, query, key, value, attention_mask, **kwargs):
    dtype = query.dtype
    # "own": plain scaled-dot-product attention (grouped-query heads at most), which we compute here.
    own = all(name in _KNOWN_KWARGS or val is None for name, val in kwargs.items())
    own = own and not hasattr(module, "sinks") and query.shape[1] % key.shape[1] == 0
    scaling = kwargs.get("scaling") or module.head_dim**-0.5
    plain = own and kwargs.get("softcap") is None
    if plain and attention_mask is not None and dtype != torch.float64:
        return _per_row_attention(query, key, value, attention_mask, scaling), None
    q, k, v = query.double(), key.double(), value.double()
    mask = attention_mask.double() if attention_mask is not None else None
    batch, heads, q_len, _ = q.shape
    if plain:
        # The same maths as _gqa_attention in one fused float64 kernel (fewer operations per step).
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scaling, enable_gqa=heads != k.shape[1]
        )
        return out.transpose(1, 2).to(dtype), None
    if own:
        q = q.contiguous()  # the grouped-query view needs (H, L) laid out in order
    step = max(1, _SCORE_BYTES // (8 * batch * heads * max(1, k.shape[2])))
    outs = []
    for start in range(0, q_len, step):  # query rows are independent: chunks change nothing
        qc = q[:, :, start : start + step]
        mc = mask[:, :, start : start + step] if mask is not None else None
        if own:
            outs.append(_gqa_attention(qc, k, v, mc, scaling, kwargs.get("softcap")))
        else:
            outs.append(_model_eager(module)(module, qc, k, v, mc, **kwargs)[0])
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    return out.to(dtype), None


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep freed memory (up to 256 MiB) instead
    of mapping fresh pages for every block over its threshold and handing them back on free.

    Decoding allocates the same few large tensors every step (the growing KV cache in any model,
    float32 copies of its rows here); with glibc's defaults each one is a new mmap whose pages
    fault in zero-filled, which on CPU once cost this attention more than its arithmetic.
    The common CPU inference advice (jemalloc/tcmalloc, or these two settings) fixes it. Process
    wide; a no-op off glibc. Returns whether the settings were applied."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 * 2**20)) and bool(
            libc.mallopt(m_trim_threshold, 256 * 2**20)
        )
    except (OSError, AttributeError):
        return False


def register() -> str:
    """Register the attention (idempotent) and return the name to pass as attn_implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(EXACT_ATTENTION, batch_invariant_attention)
    AttentionMaskInterface.register(EXACT_ATTENTION, eager_mask)
    return EXACT_ATTENTION
