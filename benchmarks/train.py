"""Student training: persyn's `train_student` against a bare TRL `SFTTrainer` run, side by side.

    .venv/bin/python benchmarks/train.py                          # SmolLM2-135M, LoRA, 64 examples, 2 rounds
    .venv/bin/python benchmarks/train.py --full --examples 32
    .venv/bin/python benchmarks/train.py --throughput             # tokens/s: full/LoRA x float32/bf16

Default mode: the same examples and hyperparameters go to (a) a bare `SFTTrainer` (no checkpoints,
no progress bar, the model saved at the end; LoRA merged as persyn does) and (b) `train_student`
(checkpoints every `--save-steps`, persyn's progress callback, train.json, adapter + merged model).
They alternate for `--rounds` rounds (bare, persyn, bare, persyn, ...) so that drift in the machine's
load hits both; printed: each wall time, and the ratio of the sums (goal <= 1.2).

`--throughput`: training tokens/s of bare SFTTrainer runs in each precision: float32, bf16 autocast
over float32 weights (what persyn runs for bf16), and pure bf16 weights; full fine-tune and LoRA;
with the loss after the last step, to see whether a precision still learns. Emulate an AVX2-only CPU
with `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`.

The examples: demo math problems with a worked answer ("expression = answer. The answer is answer."),
about 100 tokens each in SmolLM2's chat format.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # benchmarks/http.py shadows http


def _examples(n: int):
    from persyn.demo import generate_math_problems
    from persyn.student.train import SFTExample

    return [
        SFTExample(p.prompt, f"{p.expression} = {p.answer}. The answer is {p.answer}.", p.id)
        for p in generate_math_problems(n, seed=11)
    ]


def _bare(examples, base: str, settings, out: Path, *, weights_dtype="float32", compute="settings") -> dict:
    """A plain SFTTrainer run: the hyperparameters of `settings`, nothing of persyn's around it."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from persyn.student.train import _precision, optimizer_steps, to_hf_dataset

    hf_logging.set_verbosity_error()
    device, dtype = _precision(settings)
    if compute != "settings":
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[compute]
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, weights_dtype))
    lora = settings.lora
    peft = (
        None
        if lora is None
        else LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target,
            task_type="CAUSAL_LM",
        )
    )
    args = SFTConfig(
        output_dir=str(out),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        max_length=settings.max_length,
        seed=settings.seed,
        warmup_steps=int(settings.warmup_ratio * optimizer_steps(settings, len(examples)) + 0.999),
        lr_scheduler_type=settings.lr_scheduler,
        use_cpu=device.type == "cpu",
        bf16=dtype == torch.bfloat16 and weights_dtype == "float32",
        activation_checkpointing=False,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=to_hf_dataset(examples), processing_class=tok, peft_config=peft
    )
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    t1 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t1
    final = trainer.model.merge_and_unload() if lora is not None else trainer.model
    final.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "wall_s": time.perf_counter() - t0,
        "train_s": train_s,
        "tokens_per_s": tokens * settings.epochs / train_s,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "dtype": str(dtype).removeprefix("torch."),
    }


def _persyn(examples, base: str, settings, out: Path) -> dict:
    from persyn.student.train import train_student
    from persyn.util.progress import Progress, stderr_console

    t0 = time.perf_counter()
    r = train_student(examples, base, out, settings, progress=Progress(stderr_console(), transient=True))
    return {
        "wall_s": time.perf_counter() - t0,
        "train_s": r.info["train_s"],
        "tokens_per_s": r.info["tokens_per_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:smollm2-135m-instruct")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--save-steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--modes", nargs="+", default=["full", "lora"], help="--throughput: full and/or lora")
    ap.add_argument(
        "--precisions",
        nargs="+",
        default=["float32:float32", "float32:bfloat16", "bfloat16:bfloat16"],
        help="--throughput: WEIGHTS:COMPUTE dtype pairs",
    )
    args = ap.parse_args()

    import torch

    from persyn.student.settings import LoraSettings, TrainSettings
    from persyn.student.train import machine_name
    from persyn.util.hardware import cpu_info
    from persyn.zoo import resolve_model

    base = resolve_model(args.model)
    examples = _examples(args.examples)
    info = cpu_info()
    print(
        f"machine: {machine_name()}; native bf16: {info.native_bf16}; torch {torch.__version__}; "
        f"{args.model}, {len(examples)} examples x {args.epochs:g} epochs, batch {args.batch_size}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="persyn-bench-train-"))
    try:
        if args.throughput:
            for lora in [None if m == "full" else LoraSettings() for m in args.modes]:
                settings = TrainSettings(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lora=lora,
                    learning_rate=1e-4 if lora else 2e-5,
                )
                for weights, compute in (p.split(":") for p in args.precisions):
                    name = f"{'LoRA r=16' if lora else 'full'}, {weights} weights, {compute} compute"
                    out = root / name.replace(" ", "_").replace(",", "").replace("=", "")
                    r = _bare(examples, base, settings, out, weights_dtype=weights, compute=compute)
                    shutil.rmtree(out, ignore_errors=True)
                    print(
                        f"{name:45s} {r['tokens_per_s']:7.1f} tokens/s  train {r['train_s']:6.1f} s  "
                        f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}",
                        flush=True,
                    )
            return
        settings = TrainSettings(
            epochs=args.epochs,
            batch_size=args.batch_size,
            save_steps=args.save_steps,
            lora=None if args.full else LoraSettings(),
            learning_rate=2e-5 if args.full else 1e-4,
        )
        # untimed warm-up: the first run in a process pays for imports and first-touch allocations
        _bare(examples[: args.batch_size], base, settings, root / "warmup")
        bare_s = persyn_s = 0.0
        for k in range(args.rounds):
            # alternate who goes first, so that drift in the machine's load hits both alike
            order = ("bare", "persyn") if k % 2 == 0 else ("persyn", "bare")
            r = {}
            for arm in order:
                run = _bare if arm == "bare" else _persyn
                r[arm] = run(examples, base, settings, root / f"{arm}{k}")
                shutil.rmtree(root / f"{arm}{k}", ignore_errors=True)
            b, p = r["bare"], r["persyn"]
            bare_s += b["wall_s"]
            persyn_s += p["wall_s"]
            print(
                f"round {k + 1}: bare SFTTrainer {b['wall_s']:6.1f} s "
                f"({b['tokens_per_s']:.0f} tok/s, {b['dtype']})  persyn {p['wall_s']:6.1f} s "
                f"({p['tokens_per_s']:.0f} tok/s)  ratio {p['wall_s'] / b['wall_s']:.3f}",
                flush=True,
            )
        print(
            f"persyn / bare SFTTrainer, wall time over {args.rounds} rounds: {persyn_s / bare_s:.3f} "
            "(goal <= 1.2)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
