"""What the machine can do, and the defaults that follow from it: one home for the dtype rule and
the torch thread count.

Every place that loads a model (engines, the router's encoder, student training) asks
`resolve_dtype` here, so that `dtype: auto` means the same thing everywhere.

The rule for `auto`:
* GPU: the checkpoint's own dtype (None: transformers reads it from the model's config).
* CPU: bfloat16 only where the CPU computes it natively (AVX-512 BF16 or AMX, as oneDNN reports);
  else float32. Without native support torch emulates bf16, which measured ~57-80x slower than
  float32 on a matmul (docs/engines.md). float16 is never chosen on CPU.
An explicit dtype in the config always wins.

Threads: torch's intra-op pool is per process, so every model a process loads shares it. The
pipeline sizes it once per process (`ensure_threads`), as do Ray replicas and the benchmarks: an
explicit count (config `executor.threads`, a Ray replica's `num_cpus`), else `OMP_NUM_THREADS`,
else the physical cores this process may run on: those of its affinity mask, capped by a cgroup CPU
quota (containers, CI runners), which torch's own default ignores. Engines built directly from
Python leave the pool as the caller set it. `persyn doctor` prints all of it (`describe_machine`).
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from persyn.defaults import DTYPE_NAMES

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


def dtype_reason(requested: str, device: torch.device | str, *, info: CpuInfo | None = None) -> str:
    """Why `resolve_dtype` picks what it picks, in words (for logs, the report, `persyn doctor`)."""
    if requested != "auto":
        return "set in the config"
    if torch.device(device).type == "cpu":
        return "auto: " + auto_dtype_reason(info or cpu_info())
    return "auto: the checkpoint's own dtype on a GPU"


def dtype_name(dtype: torch.dtype | None) -> str:
    return "checkpoint" if dtype is None else str(dtype).removeprefix("torch.")


# ------------------------------------------------------------------------------------------------
# threads


def cgroup_cpu_limit(root: str | Path = "/") -> float | None:
    """CPUs this process's cgroup may use per second (its CPU quota), or None when unlimited.

    cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`); the tightest quota on
    the way from the process's own cgroup up to the hierarchy's root counts. `root` is for tests.
    """
    root = Path(root)
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: "0::/path"
            mounts, files = [root / "sys/fs/cgroup"], ("cpu.max",)
        elif "cpu" in controllers.split(","):
            base = root / "sys/fs/cgroup"
            mounts = [base / "cpu,cpuacct", base / "cpu", base / "cpuacct,cpu"]
            files = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        for mount in mounts:
            if not mount.is_dir():
                continue
            # In a container the listed path may not exist inside the mount: its parents, up to
            # the mount itself, still hold the limits that apply.
            rel = Path(path.lstrip("/"))
            for folder in [mount / rel, *[mount / p for p in rel.parents]]:
                quota = _read_quota(folder, files)
                if quota is not None:
                    limits.append(quota)
            break
    return min(limits) if limits else None


def _read_quota(folder: Path, files: tuple[str, ...]) -> float | None:
    try:
        if len(files) == 1:  # v2: "max 100000" or "200000 100000"
            quota, period = (folder / files[0]).read_text().split()[:2]
        else:
            quota, period = ((folder / f).read_text().strip() for f in files)
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1"):
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def physical_cores(cpus: set[int], root: str | Path = "/") -> int | None:
    """How many physical cores the logical CPUs `cpus` belong to (Linux sysfs; None if unknown).
    Two hyperthreads of one core share its arithmetic units: for matrix work they add little."""
    cores = set()
    for cpu in cpus:
        try:
            siblings = Path(root) / f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
            cores.add(siblings.read_text())
        except OSError:
            return None
    return len(cores) or None


def usable_cores() -> tuple[int, str]:
    """How many cores this process can keep busy, and how that was found: the physical cores of
    its affinity mask, capped by the cgroup CPU quota."""
    try:
        mask = os.sched_getaffinity(0)
    except AttributeError:  # macOS, Windows
        mask = set(range(os.cpu_count() or 1))
    cores = physical_cores(mask) or len(mask)
    where = f"{cores} cores in this process's affinity mask"
    if cores < len(mask):
        where = f"{cores} cores ({len(mask)} CPUs with hyperthreads) in this process's affinity mask"
    quota = cgroup_cpu_limit()
    # floor, not ceil: a parallel region waits for its slowest thread, and a thread the quota
    # throttles makes every region wait.
    if quota is not None and max(1, math.floor(quota)) < cores:
        return max(1, math.floor(quota)), f"cgroup CPU quota of {quota:g} CPUs ({where})"
    return cores, where


@dataclass(frozen=True)
class Threads:
    n: int
    reason: str


_THREADS: Threads | None = None


def default_threads() -> Threads:
    """The thread count for a process nobody configured: OMP_NUM_THREADS when set (the user's, or
    the one Ray gives a worker), else the usable cores."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return Threads(int(env), f"OMP_NUM_THREADS={env}")
    n, where = usable_cores()
    return Threads(n, where)


def set_threads(n: int, reason: str) -> Threads:
    """Size torch's intra-op pool for this process (every model in it shares the pool)."""
    global _THREADS
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _THREADS = Threads(n, reason)
    return _THREADS


def ensure_threads(requested: int | None = None) -> Threads:
    """An explicit `requested` count always applies; otherwise the default, once per process (a
    later model load keeps whatever was chosen, by the config or by a caller)."""
    if requested is not None:
        return set_threads(requested, "set in the config")
    if _THREADS is None:
        d = default_threads()
        return set_threads(d.n, d.reason)
    return _THREADS


def current_threads() -> Threads:
    """What torch uses now, with the reason when persyn chose it."""
    n = torch.get_num_threads()
    if _THREADS is not None and _THREADS.n == n:
        return _THREADS
    return Threads(n, "torch's default" if _THREADS is None else "changed outside persyn")


# ------------------------------------------------------------------------------------------------
# persyn doctor

#: /proc/cpuinfo flags that decide how fast torch runs a model on this CPU.
FLAGS_THAT_MATTER = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
    "amx_int8", "avx_vnni",  # x86
    "asimd", "bf16", "i8mm", "sve", "sve2",  # Arm
)  # fmt: skip
#: Environment variables that limit the instruction sets torch and oneDNN use (and threads).
ENV_THAT_MATTERS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS")


def cpu_model() -> tuple[str, list[str]]:
    """The CPU's model name and which of FLAGS_THAT_MATTER it advertises (Linux: /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())  # the first CPU's block
    name = fields.get("model name") or fields.get("hardware") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return name, [f for f in FLAGS_THAT_MATTER if f in flags]


def describe_machine() -> dict[str, Any]:
    """Everything `persyn doctor` prints: the CPU, what torch makes of it, the dtype `auto`
    picks and why, and the threads a model would run with."""
    info = cpu_info()
    name, flags = cpu_model()
    n, where = usable_cores()
    threads = default_threads() if _THREADS is None else _THREADS
    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    device = resolve_device("auto")
    return {
        "cpu": name,
        "cpu_flags": flags,
        "cpu_count": os.cpu_count(),
        "usable_cores": n,
        "usable_cores_reason": where,
        "torch": torch.__version__,
        "torch_capability": info.capability,
        "native_bf16": info.native_bf16,
        "limits": {k: os.environ[k] for k in ENV_THAT_MATTERS if k in os.environ},
        "threads": threads.n,
        "threads_reason": threads.reason,
        "cuda_devices": cuda,
        "device": str(device),
        "auto_dtype": dtype_name(resolve_dtype("auto", device, info=info)),
        "auto_dtype_reason": dtype_reason("auto", device, info=info).removeprefix("auto: "),
        "auto_dtype_cpu": dtype_name(auto_cpu_dtype(info)),
        "auto_dtype_cpu_reason": auto_dtype_reason(info),
    }
