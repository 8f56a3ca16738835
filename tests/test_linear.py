"""The batch-invariant linear layers (engines/linear.py): a row gives the same bits whatever it is
multiplied with, on the zoo models' own layer shapes.

GEMM libraries choose kernels by shape: on the Intel Xeon with AMX of docs/engines.md, plain
``F.linear`` fails these checks in bf16 (oneDNN: up to 32 rows vs more) and in float32 (MKL: 1 |
2-15 | 16+ rows), so they catch a change that lets a batch's size reach the GEMMs again."""

from __future__ import annotations

import pytest
import torch

from persyn.engines.linear import DECODE_ROWS, TOKEN_ROWS, RowBlockLinear, use_row_blocks

# (in_features, out_features, bias) of every distinct linear layer in the zoo models.
SHAPES = {
    "smollm2": [(576, 576, False), (576, 192, False), (576, 1536, False), (1536, 576, False)],
    "smollm2-head": [(576, 49152, False)],
    "gemma3": [
        (640, 1024, False),
        (640, 256, False),
        (1024, 640, False),
        (640, 2048, False),
        (2048, 640, False),
    ],
    "qwen2.5": [(896, 896, True), (896, 128, True), (896, 4864, False), (4864, 896, False)],
}


def layer(k: int, n: int, bias: bool, dtype: torch.dtype) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(k * 7 + n)
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) * k**-0.5)
        if bias:
            lin.bias.copy_(torch.randn(n, generator=g))
    lin = lin.to(dtype).eval()
    model = torch.nn.Sequential(lin)
    assert use_row_blocks(model) == 1
    return model[0]


def randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("model", SHAPES)
@torch.inference_mode()
def test_a_row_gives_the_same_bits_in_any_batch(model, dtype):
    """Decoding steps of 1 to 20 rows, the row at every kind of position; a sequence alone and
    left-padded in batches (prefill: batch x padded length rows, 3 to 440); 2-D chunks of rows
    (loglik's head) of 1 to 150 rows."""
    for k, n, bias in SHAPES[model]:
        lin = layer(k, n, bias, dtype)
        token = randn(k, dtype=dtype, seed=1)
        alone = lin(token.view(1, 1, k))[0, 0]
        for rows in (2, 5, DECODE_ROWS, 13, 20):
            for at in {0, rows // 2, rows - 1}:
                batch = randn(rows, 1, k, dtype=dtype, seed=rows)
                batch[at, 0] = token
                assert torch.equal(lin(batch)[at, 0], alone), (k, n, "decode", rows, at)

        for length in (3, 17, 40):
            seq = randn(length, k, dtype=dtype, seed=length)
            alone = lin(seq[None])[0]
            for rows, width in ((2, length), (4, length + 9), (7, 2 * length + 23), (11, 40)):
                width = max(width, length)
                batch = randn(rows, width, k, dtype=dtype, seed=rows * width)  # padding holds junk
                batch[rows - 1, width - length :] = seq
                got = lin(batch)[rows - 1, width - length :]
                assert torch.equal(got, alone), (k, n, "prefill", length, rows, width)

        chunk = randn(150, k, dtype=dtype, seed=2)
        alone = lin(chunk[:1])[0]
        for rows in (30, TOKEN_ROWS, 100, 150):
            assert torch.equal(lin(chunk[:rows])[0], alone), (k, n, "2-D", rows)


@torch.inference_mode()
def test_row_blocks_compute_the_usual_linear():
    """Same values as nn.Linear (up to rounding), same output shapes, same parameters and state
    dict; prepacked weights only where oneDNN computes bf16 natively."""
    torch.manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        plain = torch.nn.Linear(96, 40).to(dtype).eval()
        model = torch.nn.Sequential(torch.nn.Linear(96, 40).to(dtype))
        model.load_state_dict({"0." + k: v for k, v in plain.state_dict().items()})
        use_row_blocks(model)
        lin = model[0]
        assert isinstance(lin, RowBlockLinear) and lin.state_dict().keys() == plain.state_dict().keys()
        native = dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        assert (lin.packed is not None) == native
        for shape in ((1, 1, 96), (3, 1, 96), (2, 37, 96), (130, 96), (96,)):
            x = torch.randn(*shape).to(dtype)
            got, want = lin(x), plain(x)
            assert got.shape == want.shape
            torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


def test_subclasses_of_linear_keep_their_own_forward():
    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = torch.nn.Sequential(Scaled(4, 4), torch.nn.Linear(4, 4))
    assert use_row_blocks(model) == 1
    assert type(model[0]) is Scaled and type(model[1]) is RowBlockLinear
