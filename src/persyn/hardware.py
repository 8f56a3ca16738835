"""What the machine can do, and the defaults that follow from it: one home for the dtype rule.

Every place that loads a model (engines, the router's encoder, student training) asks
`resolve_dtype` here, so that `dtype: auto` means the same thing everywhere.

The rule for `auto`:
* GPU: the checkpoint's own dtype (None: transformers reads it from the model's config).
* CPU: bfloat16 only where the CPU computes it natively (AVX-512 BF16 or AMX, as oneDNN reports);
  else float32. Without native support torch emulates bf16, which measured ~57-80x slower than
  float32 on a matmul (docs/engines.md). float16 is never chosen on CPU.
An explicit dtype in the config always wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPE_NAMES = ("auto", "bfloat16", "float32", "float16")
_BY_NAME = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class CpuInfo:
    """What torch reports about this CPU (the inputs of the dtype rule)."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...
    native_bf16: bool  # oneDNN computes bf16 natively (AVX-512 BF16 / AMX)


def cpu_info() -> CpuInfo:
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        native = False
    return CpuInfo(capability=torch.backends.cpu.get_cpu_capability(), native_bf16=native)


def auto_cpu_dtype(info: CpuInfo) -> torch.dtype:
    """The CPU half of the rule, a pure function of what the CPU reports."""
    return torch.bfloat16 if info.native_bf16 else torch.float32


def auto_dtype_reason(info: CpuInfo) -> str:
    if info.native_bf16:
        return f"CPU computes bfloat16 natively ({info.capability}, oneDNN bf16)"
    return f"CPU has no native bfloat16 ({info.capability}): torch would emulate it, far slower than float32"


def resolve_device(device: str = "auto") -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


def resolve_dtype(
    requested: str, device: torch.device | str, *, info: CpuInfo | None = None
) -> torch.dtype | None:
    """The dtype to load a model in. None means "the checkpoint's own" (GPU with `auto`)."""
    if requested != "auto":
        if requested not in _BY_NAME:
            raise ValueError(f"unknown dtype {requested!r}; choose one of {', '.join(DTYPE_NAMES)}")
        return _BY_NAME[requested]
    device = torch.device(device)
    if device.type == "cpu":
        return auto_cpu_dtype(info or cpu_info())
    return None
