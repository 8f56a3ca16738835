"""How big the first `persyn demo` can be on this machine: the number of prompts from the machine's
measured speed and a time budget, never a shorter answer length.

Answers are never shortened to fit: every teacher gets `MAX_NEW_TOKENS` (512), and the demo's
prompts are ones whose answers end well before it (docs/pipeline.md, "The demo": math of levels 1-2,
whose worked answers run 100-210 tokens with Qwen2.5-Coder-0.5B, and extraction instructions,
whose answers quote a few items of the text). What the budget decides is how many prompts.

    speed = measure_speed()                 # about a second: float32 (or bf16) matmul GFLOP/s
    size = size_for(speed, budget_s=420)    # DemoSize(prompts=.., calibration=.., ...)

The cost model counts the demo's work in Qwen-0.5B-token equivalents (what one generated token of
the demo's largest teacher costs), from expected answer lengths per teacher and prompt kind, plus a
fixed share (model loads, the router, the report). `ENGINE_SHARE` turns the machine's measured
matmul speed into the engine's generation speed, calibrated with a whole demo run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "BUDGET_S",
    "MAX_NEW_TOKENS",
    "PLANNED_SHARE",
    "DemoSize",
    "Speed",
    "calibration_for",
    "load_size",
    "measure_speed",
    "predicted_seconds",
    "save_size",
    "size_for",
]

#: The first demo, zoo conversion and start-up included, ends within this (issue 17: 8 minutes).
BUDGET_S = 8 * 60.0
#: Every teacher's answer length: high enough that the demo's answers end by themselves.
MAX_NEW_TOKENS = 512
#: Smallest and largest demo: the router needs a few calibration prompts per teacher to learn from;
#: past 160 prompts a demo says nothing more.
MIN_PROMPTS, MAX_PROMPTS = 16, 160
MIN_CALIBRATION = 8
#: Share of the prompts every teacher answers (calibration), as in the paper's small pilot.
CALIBRATION_SHARE = 1 / 3
#: Expected answer tokens (greedy), by teacher and prompt kind; Qwen's math from 16 level-1/2
#: problems answered at 320 tokens (mean 149, max 206), the rest from the demo runs in the docs.
ANSWER_TOKENS = {
    "qwen": {"math": 170, "instruction": 90},
    "qwen-concise": {"math": 20, "instruction": 40},
    "gemma-fewshot": {"math": 25, "instruction": 60},
}
#: Cost of a token relative to one of Qwen2.5-Coder-0.5B (parameters with the output layer).
TOKEN_COST = {"qwen": 1.0, "qwen-concise": 1.0, "gemma-fewshot": 0.55}
#: Per answer, prompt processing and scoring (learnability; the judge on instructions), in Qwen
#: tokens.
PER_ANSWER = 12.0
#: Model loads, router training, export and report, on the measured reference machine (seconds at
#: its speed; scaled with the machine's speed).
FIXED_QWEN_TOKENS = 600.0
#: One Qwen-0.5B token costs about this many GFLOP (2 x 0.49 B parameters).
QWEN_GFLOP_PER_TOKEN = 2 * 0.494
#: The engine's demo throughput over the matmul bound (GFLOP/s / GFLOP per token), per dtype the
#: models run in: small-batch generation reaches a smaller share of a bf16 matmul peak than of a
#: float32 one. float32: calibrated on issue 17's AMD EPYC Zen 3 (AVX2, 2 cores), whose demo of 96
#: prompts, 32 calibration, 64 tokens spent 12 min in the pipeline, which this model predicts at
#: 38 GFLOP/s (its matmul speed at 16 rows) with 0.37. bfloat16: an AMD EPYC with AVX-512 and native
#: bf16 (2 cores, 2026-12-08), whose first `make demo` spent about 490 s in the pipeline on 160
#: prompts (53 calibration, 512 tokens) that 0.37 predicted at 198 s at its 417 GFLOP/s: 0.15.
#: Other dtypes (float16 on a GPU) take float32's. Re-measure when the engine changes.
ENGINE_SHARE = {"float32": 0.37, "bfloat16": 0.15}
#: The demo is sized to fill this share of the time left, not all of it: one calibration run per
#: dtype predicts a demo to within about 10% (the bf16 machine's second demo took 7% longer than
#: predicted and ran 20 s over), and a busy moment during the one-second speed test does the rest.
PLANNED_SHARE = 0.85


@dataclass(frozen=True)
class Speed:
    gflops: float  # matmul GFLOP/s at the demo's decode shape, in the dtype models run in
    dtype: str
    threads: int

    @property
    def qwen_tokens_per_s(self) -> float:
        return ENGINE_SHARE.get(self.dtype, ENGINE_SHARE["float32"]) * self.gflops / QWEN_GFLOP_PER_TOKEN


@dataclass(frozen=True)
class DemoSize:
    prompts: int
    calibration: int
    max_new_tokens: int
    why: str


def measure_speed(seconds: float = 1.0) -> Speed:
    """GFLOP/s of this process's matmuls at a decoding shape of the demo's largest teacher (16 rows
    x Qwen-0.5B's 896 x 4864 MLP), in the dtype `dtype: auto` runs models in here. Measured, not
    looked up: a busy machine gets a smaller demo."""
    import torch

    from persyn.util.hardware import ensure_threads, resolve_device, resolve_dtype

    threads = ensure_threads()
    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device) or torch.float16
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(16, 896, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(896, 4864, generator=gen).to(device=device, dtype=dtype)
    flop = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    for _ in range(3):
        a @ b  # warm-up: thread pool, kernels
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(8):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        n += 8
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return Speed(gflops=flop * n / elapsed / 1e9, dtype=str(dtype).removeprefix("torch."), threads=threads.n)


def calibration_for(prompts: int) -> int:
    """Calibration prompts for a demo of `prompts`: `CALIBRATION_SHARE`, at least `MIN_CALIBRATION`
    (never more than the prompts)."""
    return min(prompts, max(MIN_CALIBRATION, round(prompts * CALIBRATION_SHARE)))


def _instructions(prompts: int, pool: int) -> int:
    return min(prompts // 2, pool)


def predicted_seconds(prompts: int, speed: Speed, instruction_pool: int) -> float:
    """The demo's expected pipeline time at `prompts` prompts (calibration by `CALIBRATION_SHARE`,
    half instructions up to `instruction_pool`): every teacher answers the calibration prompts, and
    the rest go to one teacher each, counted as the costliest (Qwen with its working)."""
    cal = calibration_for(prompts)
    instr_share = _instructions(prompts, instruction_pool) / prompts

    def answer(teacher: str) -> float:
        kinds = ANSWER_TOKENS[teacher]
        tokens = instr_share * kinds["instruction"] + (1 - instr_share) * kinds["math"]
        return TOKEN_COST[teacher] * tokens + PER_ANSWER

    every_teacher = sum(answer(t) for t in ANSWER_TOKENS)
    work = FIXED_QWEN_TOKENS + cal * every_teacher + (prompts - cal) * answer("qwen")
    return work / speed.qwen_tokens_per_s


def size_for(speed: Speed, budget_s: float, instruction_pool: int) -> DemoSize:
    """The most prompts whose predicted pipeline time fits `PLANNED_SHARE` of `budget_s` (at least
    `MIN_PROMPTS`, at most `MAX_PROMPTS`), every answer at up to `MAX_NEW_TOKENS` tokens."""
    planned = budget_s * PLANNED_SHARE
    prompts = MIN_PROMPTS
    while prompts < MAX_PROMPTS and predicted_seconds(prompts + 4, speed, instruction_pool) <= planned:
        prompts += 4
    predicted = predicted_seconds(prompts, speed, instruction_pool)
    why = (
        f"{speed.gflops:.0f} GFLOP/s measured in {speed.dtype} on {speed.threads} threads, about "
        f"{speed.qwen_tokens_per_s:.0f} tokens/s for the largest teacher: about "
        f"{predicted / 60:.1f} min of pipeline planned in the {budget_s / 60:.1f} min left of the budget"
    )
    if predicted > planned:
        why += " (the smallest demo; this machine is slower than the budget allows)"
    return DemoSize(prompts, calibration_for(prompts), MAX_NEW_TOKENS, why)


#: Where `persyn demo` records the size it chose, so that a re-run resumes the same demo.
SIZE_FILE = "demo-size.json"


def save_size(out: Path, size: DemoSize) -> Path:
    from persyn.util.atomic import atomic_write

    return atomic_write(Path(out) / SIZE_FILE, json.dumps(asdict(size), indent=1) + "\n")


def load_size(out: Path) -> DemoSize | None:
    """The size a demo in `out` was made with, or None (no demo there, or one made before sizes
    were recorded). A damaged file is an error, not a reason to size the demo afresh (which would
    write another demo over this one's rows)."""
    path = Path(out) / SIZE_FILE
    try:
        return DemoSize(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}); delete it to size the demo again") from exc
