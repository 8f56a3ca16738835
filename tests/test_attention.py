"""The batch-invariant attention (engines/attention.py): row spans cut exactly the padding, the
row-by-row attention computes the usual attention, and a row's result does not change with the
padding the batch adds around it (bit for bit, in bf16)."""

from __future__ import annotations

import torch

from persyn.engines.attention import (
    _gqa_attention,
    _per_row_attention,
    batch_invariant_attention,
    row_spans,
)

MIN = torch.finfo(torch.float32).min


def additive_mask(lengths, q_len, k_len, *, left=True, window=None):
    """The eager mask transformers builds: (B, 1, Q, K), 0 where visible, MIN elsewhere. Queries
    are the last q_len of k_len positions; rows are left- or right-padded to k_len."""
    rows = []
    for n in lengths:
        real = torch.zeros(k_len, dtype=torch.bool)
        if left:
            real[k_len - n :] = True
        else:
            real[:n] = True
        q_pos = torch.arange(k_len - q_len, k_len)[:, None]
        k_pos = torch.arange(k_len)[None, :]
        visible = (k_pos <= q_pos) & real[None, :]
        if window is not None:
            visible &= k_pos > q_pos - window
        rows.append(torch.where(visible, 0.0, MIN))
    return torch.stack(rows)[:, None]


def test_spans_cut_left_padding_in_a_prefill():
    """A one-token row is "full": causal and full are the same thing there."""
    mask = additive_mask([5, 3, 1], q_len=5, k_len=5)
    assert row_spans(mask) == [(0, 5, 0, 5, "causal"), (2, 5, 2, 5, "causal"), (4, 5, 4, 5, "full")]


def test_spans_cut_right_padding_and_its_queries():
    """Right-padded (loglik): padding queries see the real keys, but are not real tokens."""
    mask = additive_mask([4, 2], q_len=4, k_len=4, left=False)
    assert row_spans(mask) == [(0, 4, 0, 4, "causal"), (0, 2, 0, 2, "causal")]


def test_spans_of_a_decoding_step_need_no_mask():
    mask = additive_mask([7, 4], q_len=1, k_len=7)
    assert row_spans(mask) == [(0, 1, 0, 7, "full"), (0, 1, 3, 7, "full")]


def test_spans_keep_a_sliding_window_mask():
    mask = additive_mask([6, 3], q_len=6, k_len=6, window=2)
    assert row_spans(mask) == [(0, 6, 0, 6, "mask"), (3, 6, 3, 6, "mask")]
    decoding = additive_mask([9, 4], q_len=1, k_len=9, window=3)  # the window cuts old keys like padding
    assert row_spans(decoding) == [(0, 1, 6, 9, "full"), (0, 1, 6, 9, "full")]


def qkv(batch, q_len, k_len, dtype=torch.float32, heads=4, kv_heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, k_len, dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, k_len, dim, generator=g).to(dtype)
    return q, k, v


def test_row_by_row_is_the_usual_attention():
    """On real queries, equal to eager attention in float64 (grouped-query heads, causal, a
    sliding window, decoding, left and right padding)."""
    cases = [
        (additive_mask([6, 4, 1], 6, 6), 6, 6),
        (additive_mask([6, 3], 6, 6, left=False), 6, 6),
        (additive_mask([6, 3], 6, 6, window=2), 6, 6),
        (additive_mask([9, 5], 1, 9), 1, 9),
    ]
    for mask, q_len, k_len in cases:
        q, k, v = qkv(mask.shape[0], q_len, k_len)
        ours = _per_row_attention(q, k, v, mask, scaling=0.3)
        reference = _gqa_attention(q.double(), k.double(), v.double(), mask.double(), 0.3, None).float()
        for row, (q0, q1, *_rest) in enumerate(row_spans(mask)):
            torch.testing.assert_close(ours[row, q0:q1], reference[row, q0:q1], atol=1e-5, rtol=1e-5)


def test_a_row_gives_the_same_bits_whatever_the_padding():
    """bf16, SmolLM2's head shapes: a 40-token row alone, then left-padded to 73 and 140 beside a
    longer row, in a prefill and in a decoding step. (A batched bf16 or float32 SDPA call differs
    by up to 4e-3 in this prefill on our CPU.)"""
    shapes = {"heads": 9, "kv_heads": 3, "dim": 64}
    for q_len in (40, 1):
        q, k, v = qkv(1, q_len, 40, dtype=torch.bfloat16, seed=3, **shapes)
        alone = _per_row_attention(q, k, v, additive_mask([40], q_len, 40).to(torch.bfloat16), 0.125)
        for total in (73, 140):
            batch_q = total if q_len > 1 else 1
            bq, bk, bv = qkv(2, batch_q, total, dtype=torch.bfloat16, seed=4, **shapes)
            bq[1, :, -q_len:], bk[1, :, -40:], bv[1, :, -40:] = q[0], k[0], v[0]
            mask = additive_mask([total, 40], batch_q, total).to(torch.bfloat16)
            batched = _per_row_attention(bq, bk, bv, mask, 0.125)
            assert torch.equal(batched[1, -q_len:], alone[0])


class _Module(torch.nn.Module):
    head_dim = 8


def test_soft_capped_attention_takes_the_float64_path():
    """Soft-capping is outside the row-by-row path: the float64 eager maths runs instead, equal to
    the reference, and a bf16 row still gives the same bits alone and padded."""
    mask = additive_mask([6, 3], 6, 6)
    q, k, v = qkv(2, 6, 6)
    plain, _ = batch_invariant_attention(_Module(), q, k, v, mask, scaling=0.3)
    assert torch.equal(plain, _per_row_attention(q, k, v, mask, 0.3))
    capped, _ = batch_invariant_attention(_Module(), q, k, v, mask, scaling=0.3, softcap=0.5)
    reference = _gqa_attention(q.double(), k.double(), v.double(), mask.double(), 0.3, 0.5).float()
    torch.testing.assert_close(capped[:, -3:], reference[:, -3:], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(capped[0], plain[0], atol=1e-3)  # the cap did change the result

    bq, bk, bv = (t.to(torch.bfloat16) for t in (q, k, v))
    alone, _ = batch_invariant_attention(
        _Module(), bq[1:, :, 3:], bk[1:, :, 3:], bv[1:, :, 3:],
        additive_mask([3], 3, 3).to(torch.bfloat16), scaling=0.3, softcap=0.5,
    )  # fmt: skip
    batched, _ = batch_invariant_attention(
        _Module(), bq, bk, bv, mask.to(torch.bfloat16), scaling=0.3, softcap=0.5
    )
    assert torch.equal(batched[1, 3:], alone[0])
