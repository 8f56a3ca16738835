"""Engine benchmark: the transformers engine against bare transformers, measured side by side.

    .venv/bin/python benchmarks/engine.py                 # everything (~10 min on 2 CPU cores)
    .venv/bin/python benchmarks/engine.py --only generate --models smollm2-135m-instruct --reps 3

(a) generate: engine.generate against a bare ``model.generate`` loop on the same prompts, batches
    (the engine's: sorted by length, batch_size rows), greedy, same max_new_tokens and stop tokens.
    The engine runs with ``dtype: auto`` (persyn.util.hardware: bfloat16 where the CPU computes it
    natively, else float32), as shipped (batch-invariant attention on CPU) and with
    ``batch_invariant=False``; the bare loop runs in both dtypes, so a wrong default shows up as a
    ratio. Throughput = completion tokens per second; goal: engine >= 0.95x the faster bare dtype.
    The engine drops finished rows from the batch (engines/decoding.py), which ``model.generate``
    does not, so the gap grows with ``--max-new-tokens`` when answers end at different lengths.
    To see the AVX2 branch on a CPU with native bf16: ``ATEN_CPU_CAPABILITY=avx2
    ONEDNN_MAX_CPU_ISA=AVX2`` (the header prints what torch then reports).
(b) loglik on Gemma-3-270M (262K vocabulary), 8 sequences x 200 tokens: engine.loglik against
    the naive computation (full logits, full float32 log_softmax, gather) and against the bare
    forward pass producing the logits (the floor). Goals: time <= 1.3x the floor; peak memory above
    the weights >= 5x lower than naive.

(c) threads (``--only threads``): engine generation (dtype auto) with 1, 2, ... torch threads up to
    the cores persyn counts for this process (persyn.util.hardware.usable_cores), alternating within each
    repetition, wall clock (threads only change elapsed time). Ratio = tok/s against the best count.

Timing: variants alternate within each repetition (ABC, CBA, ...), medians reported. ``--clock
wall`` (default) is elapsed time with torch's threads; on a shared machine other processes inflate
it at random, so ``--clock cpu --threads 1`` measures this process's CPU time on one thread, which
contention barely touches (no thread waits on a descheduled sibling).

Memory: each measurement in a fresh process: load the model, run once
(warm-up), reset the kernel's peak-RSS counter (``/proc/self/clear_refs``), run again and read
``VmHWM``; peak above weights = VmHWM - RSS before the run. tracemalloc cannot see torch's
allocations; RSS can.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Python puts this script's folder first on sys.path; a sibling benchmark named like a stdlib module
# (http.py) would then shadow it for torch and httpx.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import torch  # noqa: E402

from persyn.engines import EngineSpec, GenerationParams  # noqa: E402
from persyn.engines.transformers_engine import TransformersEngine, _pad  # noqa: E402
from persyn.util.hardware import describe_machine, dtype_name, ensure_threads, usable_cores  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis to a ten year old.",
    "Write a haiku about the sea.",
    "Give three tips for staying focused while studying.",
    "What is a prime number? Give two examples.",
    "Describe how to make a cup of tea.",
    "Why is the sky blue? Answer briefly.",
    "Write a Python function that reverses a string.",
    "What are the main causes of the French Revolution?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How do vaccines work?",
    "Translate 'good morning, how are you?' into Spanish.",
    "What is the difference between a list and a tuple in Python?",
    "Suggest a name for a bakery that sells only bread.",
    "How many minutes are in a day? Show the calculation.",
    "Write a short motivational message for a runner.",
]
LOGLIK_PROMPT_TOKENS, LOGLIK_TOTAL_TOKENS, LOGLIK_BATCH = 50, 200, 8


# --------------------------------------------------------------------------------------------------
# (a) generation


def bare_generate_factory(engine: TransformersEngine, params: GenerationParams, dtype: torch.dtype):
    """A bare model.generate loop over exactly the engine's batches (same order, padding, stops),
    on the model loaded in `dtype` as transformers loads it by default (its default attention)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(engine.path, dtype=dtype).eval()
    ids = sorted((engine.prompt_ids(p) for p in PROMPTS), key=len)
    batches = [ids[i : i + engine.batch_size] for i in range(0, len(ids), engine.batch_size)]
    stop = sorted(engine.stop_ids)

    def run() -> int:
        tokens = 0
        with torch.inference_mode():
            for batch in batches:
                x, mask = _pad(batch, engine.pad_id, left=True, device=engine.device)
                out = model.generate(
                    input_ids=x, attention_mask=mask, max_new_tokens=params.max_new_tokens, do_sample=False,
                    temperature=None, top_p=None, top_k=None, eos_token_id=stop, pad_token_id=engine.pad_id,
                )  # fmt: skip
                for row in out[:, x.shape[1] :].tolist():
                    end = next((k for k, t in enumerate(row) if t in stop), None)
                    tokens += end + 1 if end is not None else len(row)
        return tokens

    return run


CLOCK = time.perf_counter


def other_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.bfloat16 else torch.bfloat16


def bench_generate(alias: str, reps: int, max_new_tokens: int) -> dict:
    engine = TransformersEngine(EngineSpec(model=alias, batch_size=8))  # dtype auto
    fast = TransformersEngine(EngineSpec(model=alias, batch_size=8), batch_invariant=False)
    params = GenerationParams(max_new_tokens=max_new_tokens)
    variants = {
        "engine": lambda: sum(g.completion_tokens for g in engine.generate(PROMPTS, params)),
        "fast": lambda: sum(g.completion_tokens for g in fast.generate(PROMPTS, params)),
        "bare": bare_generate_factory(engine, params, engine.dtype),
        "bare_other": bare_generate_factory(engine, params, other_dtype(engine.dtype)),
    }
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in variants}
    tokens: dict[str, int] = {}
    for rep in range(reps):
        order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
        for name in order:
            t0 = CLOCK()
            tokens[name] = variants[name]()
            times[name].append(CLOCK() - t0)
    engine.close()
    fast.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    auto = engine.dtype
    return {
        "model": alias, "dtype": dtype_name(auto), "other_dtype": dtype_name(other_dtype(auto)),
        "median_s": med, "tokens": tokens, "tok_per_s": {k: tokens[k] / med[k] for k in med}, "runs": times,
    }  # fmt: skip


def bench_threads(alias: str, reps: int, max_new_tokens: int, counts: list[int]) -> dict:
    engine = TransformersEngine(EngineSpec(model=alias, batch_size=8))
    params = GenerationParams(max_new_tokens=max_new_tokens)

    def run(n: int) -> int:
        torch.set_num_threads(n)
        return sum(g.completion_tokens for g in engine.generate(PROMPTS, params))

    for n in counts:  # warm-up
        run(n)
    times: dict[int, list[float]] = {n: [] for n in counts}
    tokens: dict[int, int] = {}
    for rep in range(reps):
        for n in counts if rep % 2 == 0 else counts[::-1]:
            t0 = time.perf_counter()
            tokens[n] = run(n)
            times[n].append(time.perf_counter() - t0)
    engine.close()
    med = {n: statistics.median(v) for n, v in times.items()}
    return {"model": alias, "dtype": dtype_name(engine.dtype), "median_s": med, "tokens": tokens,
            "tok_per_s": {n: tokens[n] / med[n] for n in med}, "runs": times}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# (b) loglik


def loglik_inputs(engine: TransformersEngine) -> tuple[list[str], list[str]]:
    """Prompts and responses of LOGLIK_PROMPT_TOKENS + the rest = LOGLIK_TOTAL_TOKENS tokens each."""
    tok = engine.tokenizer
    text = (
        "The history of science is the study of the development of science and scientific knowledge, "
        "including both the natural and social sciences. Science is a body of empirical, theoretical, "
        "and practical knowledge about the natural world, produced by scientists who emphasize the "
        "observation, explanation, and prediction of real-world phenomena. "
    ) * 20
    words = tok(text, add_special_tokens=False).input_ids
    prompts, responses = [], []
    for i in range(LOGLIK_BATCH):
        p_ids = words[i * 7 : i * 7 + LOGLIK_PROMPT_TOKENS]
        prompt = tok.decode(p_ids)
        n_prompt = len(engine.prompt_ids(prompt))
        r_ids = words[300 + i * 11 : 300 + i * 11 + LOGLIK_TOTAL_TOKENS - n_prompt]
        prompts.append(prompt)
        responses.append(tok.decode(r_ids))
        assert len(engine.response_ids(responses[-1])) + n_prompt <= LOGLIK_TOTAL_TOKENS + 2
    return prompts, responses


def loglik_variants(engine: TransformersEngine, bare) -> dict:
    prompts, responses = loglik_inputs(engine)
    pairs = [(engine.prompt_ids(p), engine.response_ids(r)) for p, r in zip(prompts, responses, strict=True)]
    seqs = [p + r for p, r in pairs]
    x, mask = _pad(seqs, engine.pad_id, left=False, device=engine.device)

    def floor():
        with torch.inference_mode():
            return bare(input_ids=x, attention_mask=mask).logits

    def naive():
        with torch.inference_mode():
            logp = torch.log_softmax(bare(input_ids=x, attention_mask=mask).logits.float(), dim=-1)
            out = []
            for row, (p, r) in enumerate(pairs):
                pos = torch.arange(len(p) - 1, len(p) + len(r) - 1)
                out.append(logp[row, pos, torch.tensor(r)].mean().item())
            return out

    return {
        "engine": lambda: engine.loglik(prompts, responses),
        "naive": naive,
        "floor": floor,
    }, [len(s) for s in seqs]


def load_for_loglik(alias: str):
    from transformers import AutoModelForCausalLM

    engine = TransformersEngine(EngineSpec(model=alias, batch_size=LOGLIK_BATCH))
    bare = AutoModelForCausalLM.from_pretrained(engine.path, dtype=engine.dtype).eval()
    return engine, bare


def bench_loglik_time(alias: str, reps: int) -> dict:
    engine, bare = load_for_loglik(alias)
    variants, lengths = loglik_variants(engine, bare)
    values = {k: run() for k, run in variants.items()}  # warm-up, and a correctness check
    drift = max(abs(a - b) for a, b in zip(values["engine"], values["naive"], strict=True))
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(reps):
        order = list(variants) if rep % 2 == 0 else list(variants)[::-1]
        for name in order:
            t0 = CLOCK()
            variants[name]()
            times[name].append(CLOCK() - t0)
    engine.close()
    return {"lengths": lengths, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "runs": times, "engine_vs_naive_max_abs_diff": drift}  # fmt: skip


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def memory_child(alias: str, variant: str) -> None:
    """Run in a fresh process: print the peak RSS above the pre-run RSS of one variant, in MiB."""
    engine, bare = load_for_loglik(alias)
    variants, _ = loglik_variants(engine, bare)
    run = variants[variant]
    run()  # warm-up: lazily created kernels and buffers are not the variant's working memory
    import gc

    gc.collect()
    before = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    run()
    peak = _rss_kib("VmHWM")
    result = {"variant": variant, "peak_above_mib": (peak - before) / 1024, "rss_mib": before / 1024}
    print(json.dumps(result))


def bench_loglik_memory(alias: str, reps: int) -> dict:
    results: dict[str, list[float]] = {}
    for rep in range(reps):
        order = ["engine", "naive", "floor"] if rep % 2 == 0 else ["floor", "naive", "engine"]
        for variant in order:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", alias, variant], capture_output=True, text=True
            )
            if out.returncode:
                raise RuntimeError(f"memory measurement of {variant} failed:\n{out.stderr[-3000:]}")
            line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
            results.setdefault(variant, []).append(json.loads(line)["peak_above_mib"])
    return {"median_mib": {k: statistics.median(v) for k, v in results.items()}, "runs": results}


# --------------------------------------------------------------------------------------------------


def machine() -> str:
    m = describe_machine()
    limits = " ".join(f"{k}={v}" for k, v in m["limits"].items()) or "none"
    return (
        f"{m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}, CPU capability {m['torch_capability']}, "
        f"native bf16 {'yes' if m['native_bf16'] else 'no'} (limits: {limits}), {torch.get_num_threads()} "
        f"threads; dtype auto = {m['auto_dtype']} ({m['auto_dtype_reason']}); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["generate", "loglik", "threads"], default=None)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mem-reps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--loglik-model", default="gemma3-270m")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: persyn's choice)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    global CLOCK
    ensure_threads(args.threads)  # as the pipeline would (None: persyn's default for this machine)
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    from rich.console import Console
    from rich.table import Table
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars between the tables

    console = Console(width=max(Console().width, 120))
    console.print(f"[bold]machine[/]: {machine()}; clock: {args.clock}")
    report: dict = {"machine": machine(), "clock": args.clock, "command": " ".join(sys.argv)}

    if args.only in (None, "generate"):
        table = Table(title=f"(a) generate: {len(PROMPTS)} prompts, batch 8, greedy, "
                      f"max_new_tokens={args.max_new_tokens}, median of {args.reps}")  # fmt: skip
        cols = ("model", "variant", "dtype", f"{args.clock} s", "tokens", "tok/s",
                "vs the faster bare dtype (goal >= 0.95)")  # fmt: skip
        for col in cols:
            table.add_column(col, justify="right")
        report["generate"] = []
        for name in args.models:
            r = bench_generate(f"zoo:{name}", args.reps, args.max_new_tokens)
            report["generate"].append(r)
            tps = r["tok_per_s"]
            best = max(tps["bare"], tps["bare_other"])
            auto, other = r["dtype"], r["other_dtype"]
            for variant, label, dtype in (("engine", "engine (dtype auto)", auto),
                                          ("fast", "engine, invariance off", auto),
                                          ("bare", "bare generate", auto),
                                          ("bare_other", "bare generate", other)):  # fmt: skip
                table.add_row(name, label, dtype, f"{r['median_s'][variant]:.2f}", str(r["tokens"][variant]),
                              f"{tps[variant]:.1f}", f"{tps[variant] / best:.2f}x")  # fmt: skip
            r["dtype_ratio"] = tps["bare"] / tps["bare_other"]
        console.print(table)
        for r in report["generate"]:
            console.print(
                f"{r['model']}: bare generate in the dtype auto picks ({r['dtype']}) runs "
                f"[bold]{r['dtype_ratio']:.2f}x[/] the other ({r['other_dtype']}) on this machine "
                "(below 1: auto picked the slower one)"
            )

    if args.only == "threads":
        counts = list(range(1, usable_cores()[0] + 1))
        table = Table(title=f"(c) threads: engine generate, {len(PROMPTS)} prompts, batch 8, greedy, "
                      f"max_new_tokens={args.max_new_tokens}, wall clock, median of {args.reps}")  # fmt: skip
        for col in ("model", "dtype", "threads", "wall s", "tokens", "tok/s", "vs best"):
            table.add_column(col, justify="right")
        report["threads"] = []
        for name in args.models:
            r = bench_threads(f"zoo:{name}", args.reps, args.max_new_tokens, counts)
            report["threads"].append(r)
            best = max(r["tok_per_s"].values())
            for n in counts:
                table.add_row(name, r["dtype"], str(n), f"{r['median_s'][n]:.2f}",
                              str(r["tokens"][n]), f"{r['tok_per_s'][n]:.1f}",
                              f"{r['tok_per_s'][n] / best:.2f}x")  # fmt: skip
        console.print(table)

    if args.only in (None, "loglik"):
        alias = f"zoo:{args.loglik_model}"
        t = bench_loglik_time(alias, args.reps)
        m = bench_loglik_memory(alias, args.mem_reps)
        report["loglik"] = {"time": t, "memory": m}
        title = (
            f"(b) loglik, {args.loglik_model}: {LOGLIK_BATCH} x {max(t['lengths'])} tokens, "
            f"time median of {args.reps}, memory median of {args.mem_reps} fresh processes"
        )
        table = Table(title=title)
        cols = ("variant", f"{args.clock} s", "x floor (goal <= 1.3)", "peak above weights MiB", "naive / it")
        for col in cols:
            table.add_column(col, justify="right")
        floor_s = t["median_s"]["floor"]
        naive_mib = m["median_mib"]["naive"]
        for name in ("engine", "naive", "floor"):
            mib = m["median_mib"][name]
            table.add_row(name, f"{t['median_s'][name]:.2f}", f"{t['median_s'][name] / floor_s:.2f}x",
                          f"{mib:.0f}", f"{naive_mib / max(mib, 1e-9):.1f}x")  # fmt: skip
        console.print(table)
        console.print(f"engine vs naive loglik, max abs difference: {t['engine_vs_naive_max_abs_diff']:.2e}")
    console.print(f"[bold]load average at the end[/]: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
