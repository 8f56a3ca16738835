"""How big the first `persyn demo` can be on this machine: the number of prompts from the machine's
measured speed and a time budget, never a shorter answer length.

Answers are never shortened to fit: every teacher gets `MAX_NEW_TOKENS` (512), and the demo's
prompts are ones whose answers end well before it (docs/pipeline.md, "The demo": math of levels 1-2,
whose worked answers run 100-210 tokens with Qwen2.5-Coder-0.5B, and extraction instructions,
whose answers quote a few items of the text). What the budget decides is how many prompts.

    speed = measure_speed()                 # about a second: float32 (or bf16) matmul GFLOP/s
    size = size_for(speed, budget_s=420)    # DemoSize(prompts=.., calibration=.., ...)

The cost model has one term per kind of work, each scaled by the machine's measured matmul speed:
generation (the teachers' expected answer tokens, counted in Qwen-0.5B-token equivalents, at
`DECODE_SHARE` of the matmul bound, plus a fixed share for model loads, the router and the
report) and scoring (the judge reading each judged calibration answer, the student reading every
calibration answer), whose prompt-length passes cost far more per answer than generating it. The
constants come from whole demo runs, one per dtype (see below).
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
#: Model loads, router training, export and report, in Qwen tokens at the machine's speed.
FIXED_QWEN_TOKENS = 600.0
#: One Qwen-0.5B token costs about this many GFLOP (2 x 0.49 B parameters).
QWEN_GFLOP_PER_TOKEN = 2 * 0.494
#: The demo's generation throughput over the matmul bound (GFLOP/s / GFLOP per token), the same in
#: both dtypes: fitted to two whole first demos (2026-12-08, AMD EPYC with AVX-512 and native bf16,
#: 2 cores) whose generation, loads and report took 191 s (bf16, 148 prompts, 49 calibration, 431
#: GFLOP/s measured) and 412 s (float32 under the AVX2 limit, 60 prompts, 20 calibration, 79
#: GFLOP/s): 0.31 and 0.30 fit them.
DECODE_SHARE = 0.30
#: Scoring work per answer, in GFLOP at the measured matmul speed, per dtype the models run in
#: (prompt-length passes reach another share of the matmul bound in bf16 than in float32): the
#: judge per judged answer and the student's log-likelihood per calibration answer, from the same
#: two demos (bf16: 63 judged in 179 s and 147 read in 95 s; float32: 42 judged in 240 s and 60
#: read in 142 s, at the speeds above). They include the base teacher's looping answers, cut at
#: 1024 tokens (6 of 20 in the float32 demo), which are most of the tokens read. Other dtypes
#: (float16 on a GPU) take float32's. Re-measure when the engine or the demo's prompts change.
JUDGE_GFLOP = {"bfloat16": 1225.0, "float32": 451.0}
STUDENT_GFLOP = {"bfloat16": 279.0, "float32": 187.0}
#: Share of the calibration prompts that are instructions, i.e. judged (the calibration subset is
#: chosen for diversity and takes more of them than their share of all prompts: 21 of 49 and 14
#: of 20 in the two demos).
JUDGED_SHARE = 0.7
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
        return DECODE_SHARE * self.gflops / QWEN_GFLOP_PER_TOKEN

    def scoring_gflop(self, table: dict[str, float]) -> float:
        return table.get(self.dtype, table["float32"])


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
    the rest go to one teacher each, counted as the costliest (Qwen with its working); the judge
    reads every teacher's answer to the calibration instructions, the student every calibration
    answer."""
    cal = calibration_for(prompts)
    instructions = _instructions(prompts, instruction_pool)
    instr_share = instructions / prompts

    def answer(teacher: str) -> float:
        kinds = ANSWER_TOKENS[teacher]
        tokens = instr_share * kinds["instruction"] + (1 - instr_share) * kinds["math"]
        return TOKEN_COST[teacher] * tokens

    every_teacher = sum(answer(t) for t in ANSWER_TOKENS)
    generation = FIXED_QWEN_TOKENS + cal * every_teacher + (prompts - cal) * answer("qwen")
    judged = len(ANSWER_TOKENS) * min(instructions, round(cal * JUDGED_SHARE))
    read = len(ANSWER_TOKENS) * cal
    scoring = judged * speed.scoring_gflop(JUDGE_GFLOP) + read * speed.scoring_gflop(STUDENT_GFLOP)
    return generation / speed.qwen_tokens_per_s + scoring / speed.gflops


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
