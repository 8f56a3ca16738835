"""Batch-invariant linear layers: every matrix product runs at a shape that does not depend on the batch.

Why: a GEMM library picks its kernel, blocking and summation order by the problem's shape, so the
same row can round differently depending on how many rows are multiplied with it. Measured on an
Intel Xeon with AMX, torch 2.13 (docs/engines.md): bf16 oneDNN rounds a row differently for up to
32 rows than for more (SmolLM2's, Gemma's and Qwen's LM heads, Qwen's MLP), and some shapes have
stray classes (K=2048, N=640: 33-36 rows); float32 (MKL) has classes 1 | 2-15 | 16+ rows, and
with MKL's AVX2 code 1 | 2 | 3 | 4-49 | 63+. A prefill multiplies batch x padded length rows and a
decoding step one row per live row, so both change with the batch around a row.

How: a linear layer cuts its rows into blocks of a fixed size and multiplies each block on its own,
zero-padding the last one: every GEMM has the shape (block, in_features) x (in_features,
out_features) whatever the batch. One new token per row (a decoding step, or the last position's
logits) goes in blocks of ``DECODE_ROWS``; anything else (a whole sequence per row, or a 2-D input
such as loglik's chunks of hidden states) in blocks of ``TOKEN_ROWS``. Which of the two a row gets
depends only on the call it is in, never on the other rows (the engine pads a one-token prompt to
two positions, so its prefill is never mistaken for a decoding step).

What this assumes: that a GEMM of one fixed shape computes each row from that row alone, the same
at any position in the block and whatever the other rows hold. Every kernel we know works that
way (rows are independent outputs; only the reduction over in_features is blocked, and that
blocking depends on the shape), and ``tests/test_linear.py`` checks it on the zoo models' shapes.

Speed: on CPU, a GEMM with few rows spends most of its time reordering the weight into the
kernel's layout, on every call; the blocks would multiply that cost. Where the CPU computes bf16
natively the weights are therefore reordered once, at load, for oneDNN
(``torch.ops.mkldnn._reorder_linear_weight``, the prepacking torch's own CPU inference path uses),
which makes a decoding step's linear layers about 1.4x faster than plain ``F.linear`` and costs a
second copy of the linear weights in memory. float32 keeps MKL's plain GEMM: there, prepacking
measured no faster on AVX2 (the weights' memory traffic dominates) and would double the memory.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# Rows per GEMM for one new token per row: the engine's default batch size, so a full decoding
# batch is one call; fewer live rows cost about the same (the weights' traffic dominates).
DECODE_ROWS = 8
# Rows per GEMM for whole sequences: fewer, larger calls (each call reads all the weights), and
# loglik's chunks of Gemma's head (64 rows of 262K logits) fit one block exactly.
TOKEN_ROWS = 64


class RowBlockLinear(torch.nn.Linear):
    """``nn.Linear`` whose GEMMs always have the same shape (see the module docstring)."""

    packed: torch.Tensor | None = None  # the weight in oneDNN's layout, or None: plain F.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = DECODE_ROWS if x.dim() == 3 and x.shape[1] == 1 else TOKEN_ROWS
        rows = x.reshape(-1, x.shape[-1])
        n = rows.shape[0]
        if n % block:
            rows = F.pad(rows, (0, 0, 0, block - n % block))  # zero rows: they change no other row
        if rows.shape[0] == block:
            out = self._gemm(rows)
        else:
            out = torch.cat([self._gemm(part) for part in rows.split(block)])
        return out[:n].view(*x.shape[:-1], out.shape[-1])

    def _gemm(self, rows: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return F.linear(rows, self.weight, self.bias)


def use_row_blocks(model: torch.nn.Module) -> int:
    """Turn every plain ``nn.Linear`` of ``model`` into a ``RowBlockLinear`` (same parameters, same
    state dict), prepacking the weights where that pays (see the module docstring). Subclasses of
    ``nn.Linear`` with their own forward are left alone. Returns how many layers were converted."""
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    pack = bool(layers) and _prepacking_works(layers[0].weight)
    with torch.no_grad():
        for layer in layers:
            layer.__class__ = RowBlockLinear
            if pack:
                layer.packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight, DECODE_ROWS)
            else:
                layer.packed = None
    return len(layers)


_PACKING_CHECKED: dict[tuple[torch.dtype, str], bool] = {}


def _prepacking_works(weight: torch.Tensor) -> bool:
    """Whether oneDNN prepacking is used for weights like this one: bf16 on a CPU with native bf16,
    and the (private) torch ops there and agreeing with F.linear on a probe (checked once)."""
    key = (weight.dtype, weight.device.type)
    if key not in _PACKING_CHECKED:
        ok = False
        if weight.device.type == "cpu" and weight.dtype == torch.bfloat16:
            try:
                if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                    g = torch.Generator().manual_seed(0)
                    w = torch.randn(48, 64, generator=g).to(weight.dtype)
                    x = torch.randn(DECODE_ROWS, 64, generator=g).to(weight.dtype)
                    with torch.no_grad():
                        packed = torch.ops.mkldnn._reorder_linear_weight(w, DECODE_ROWS)
                        got = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
                    ok = torch.allclose(got.float(), F.linear(x, w).float(), atol=0.05, rtol=0.02)
            except (AttributeError, RuntimeError) as exc:
                log.warning("oneDNN weight prepacking unavailable (%s); linear layers use F.linear", exc)
        _PACKING_CHECKED[key] = ok
    return _PACKING_CHECKED[key]
