"""The dtype rule (persyn.hardware) as a pure function of what the CPU reports."""

import pytest
import torch

from persyn.hardware import CpuInfo, auto_cpu_dtype, resolve_dtype

AMX = CpuInfo(capability="AVX512", native_bf16=True)
AVX2 = CpuInfo(capability="AVX2", native_bf16=False)


def test_auto_picks_bfloat16_only_where_the_cpu_has_it_natively():
    assert auto_cpu_dtype(AMX) is torch.bfloat16
    assert auto_cpu_dtype(AVX2) is torch.float32
    # AVX-512 without the BF16 extension: still emulated, so float32
    assert auto_cpu_dtype(CpuInfo(capability="AVX512", native_bf16=False)) is torch.float32


@pytest.mark.parametrize("info", [AMX, AVX2])
def test_auto_never_picks_float16_on_cpu(info):
    assert resolve_dtype("auto", "cpu", info=info) in (torch.bfloat16, torch.float32)


@pytest.mark.parametrize("info", [AMX, AVX2])
@pytest.mark.parametrize("name", ["bfloat16", "float32", "float16"])
def test_an_explicit_dtype_always_wins(info, name):
    assert resolve_dtype(name, "cpu", info=info) is getattr(torch, name)


def test_auto_on_gpu_keeps_the_checkpoint_dtype():
    assert resolve_dtype("auto", "cuda", info=AVX2) is None


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float8"):
        resolve_dtype("float8", "cpu")
