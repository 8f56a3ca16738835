"""Fine-tune the student on a strategy's dataset with TRL's `SFTTrainer`, resumably.

    examples = load_sft_examples("runs/x/dataset/persyn.prompt_completion.jsonl")
    result = train_student(examples, base_model="/path/to/student", out_dir="runs/x/students/persyn",
                           settings=TrainSettings(), base_name="zoo:smollm2-135m-instruct")
    result.model_dir      # model + tokenizer, loadable by every engine (LoRA: merged)

The data goes to TRL as *conversational prompt-completion* rows (`prompt: [user]`, `completion:
[assistant]`), the shape `persyn export` writes. TRL renders both with the chat template and trains on
the tokens where prompt+completion departs from the prompt alone (`completion_only_loss`), so the loss
covers the assistant's text and its end-of-turn token, and never the prompt; this needs no
`{% generation %}` markers, which SmolLM2's template lacks (the mask is checked by a test).

The output folder:

    model/          the fine-tuned model and tokenizer (LoRA: the adapter merged into the base)
    adapter/        LoRA only: the adapter alone (peft)
    checkpoints/    while training: the last checkpoint (removed once the model is written)
    started.json    the fingerprint of this training (settings, data, base model)
    train.json      written last: hyperparameters, dataset hash, loss curve, wall time, dtype, machine

Re-running: a folder with `train.json` and the same fingerprint is returned as is; a killed run
resumes from its last complete checkpoint (one with `trainer_state.json`, which the trainer writes
last); a different fingerprint raises `TrainingConflict` unless `force=True` starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persyn.store.keys import content_key, digest
from persyn.student.settings import TrainSettings
from persyn.util.atomic import write_json
from persyn.util.errors import PersynError
from persyn.util.progress import Progress, quiet_libraries

__all__ = [
    "SFTExample",
    "TrainResult",
    "TrainingConflict",
    "build_trainer",
    "dataset_hash",
    "load_sft_examples",
    "machine_name",
    "optimizer_steps",
    "sft_config",
    "train_student",
]

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
STARTED_FILE = "started.json"
RESULT_FILE = "train.json"
_STATE_FILE = "trainer_state.json"  # the trainer writes it last in a checkpoint: its mark of completion


class TrainingConflict(PersynError, RuntimeError):
    """The output folder holds a training of other settings, data or base model."""


@dataclass(frozen=True)
class SFTExample:
    """One training row: a user prompt and the assistant response to learn."""

    prompt: str
    completion: str
    id: str | None = None


@dataclass
class TrainResult:
    """What `train_student` leaves behind (also `train.json`, as a dict)."""

    out_dir: Path
    model_dir: Path
    adapter_dir: Path | None
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # True: a finished training was found and returned as is

    @property
    def loss_curve(self) -> list[tuple[int, float]]:
        return [tuple(x) for x in self.info.get("loss_curve", [])]


# ----------------------------------------------------------------------------- data


def _message_text(msgs: Any, role: str, where: str) -> str:
    if not isinstance(msgs, list) or len(msgs) != 1 or not isinstance(msgs[0], dict):
        raise ValueError(f"{where}: expected one {role} message, got {msgs!r:.80}")
    if msgs[0].get("role") != role or not isinstance(msgs[0].get("content"), str):
        raise ValueError(f"{where}: expected a {role!r} message with text content")
    return msgs[0]["content"]


def load_sft_examples(path: str | Path) -> list[SFTExample]:
    """Rows of an exported JSONL file, either shape: `prompt`/`completion` (message lists or plain
    strings) or `messages` (one user turn, one assistant turn). A malformed row raises with its line."""
    path = Path(path)
    out: list[SFTExample] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            if "prompt" in row and "completion" in row:
                p, c = row["prompt"], row["completion"]
                prompt = p if isinstance(p, str) else _message_text(p, "user", f"{where}.prompt")
                completion = c if isinstance(c, str) else _message_text(c, "assistant", f"{where}.completion")
            elif "messages" in row:
                msgs = row["messages"]
                if not isinstance(msgs, list) or len(msgs) != 2:
                    raise ValueError(f"{where}: expected messages [user, assistant]")
                prompt = _message_text(msgs[:1], "user", f"{where}.messages")
                completion = _message_text(msgs[1:], "assistant", f"{where}.messages")
            else:
                raise ValueError(f"{where}: no prompt/completion or messages field")
            out.append(SFTExample(prompt, completion, row.get("prompt_id")))
    return out


def dataset_hash(examples: Sequence[SFTExample]) -> str:
    """SHA-256 of the training text in order (ids aside): what the weights depend on."""
    return digest(
        iter(json.dumps([e.prompt, e.completion], ensure_ascii=False).encode() + b"\n" for e in examples),
        None,
    )


# ----------------------------------------------------------------------------- machine, precision


def machine_name() -> str:
    """The CPU (or GPU) that trained: every figure is tied to it."""
    import torch

    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    cpu += f" ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}; CPU {cpu}"
    return cpu


def _precision(settings: TrainSettings):
    """(device, compute dtype) from persyn.util.hardware's rule. On a GPU, `auto` means bf16 where the GPU
    has it, else float32 (the checkpoint's own dtype, the inference answer, does not suit training)."""
    import torch

    from persyn.util.hardware import resolve_device, resolve_dtype

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("train.dtype float16 is not supported on CPU; use bfloat16 or float32")
    return device, dtype


# ----------------------------------------------------------------------------- trainer pieces


def optimizer_steps(settings: TrainSettings, n_examples: int) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / settings.batch_size) / settings.gradient_accumulation)
    return math.ceil(per_epoch * settings.epochs)


def sft_config(settings: TrainSettings, output_dir: str | Path, device, dtype, n_examples: int, **overrides):
    """The `SFTConfig` for these settings (benchmarks/train.py spells its bare run out on purpose: the
    baseline is what a user would write without persyn)."""
    import torch
    from trl import SFTConfig

    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        max_length=settings.max_length,
        seed=settings.seed,
        data_seed=settings.seed,
        # as steps: transformers 5 dropped warmup_ratio, 4.x takes only an int here
        warmup_steps=math.ceil(settings.warmup_ratio * optimizer_steps(settings, n_examples)),
        weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.lr_scheduler,
        completion_only_loss=True,
        packing=False,
        use_cpu=device.type == "cpu",
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        save_strategy="steps",
        # At least four resume points per training: a short one (a small student on CPU may have 20
        # steps of several minutes) would otherwise never checkpoint and a kill would lose it all.
        save_steps=min(settings.save_steps, max(1, math.ceil(optimizer_steps(settings, n_examples) / 4))),
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    # transformers 5 renamed gradient_checkpointing (TRL defaults it to on) to activation_checkpointing
    names = SFTConfig.__dataclass_fields__
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs[ckpt] = settings.gradient_checkpointing
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def to_hf_dataset(examples: Sequence[SFTExample]):
    """Conversational prompt-completion rows, the shape TRL masks to the completion."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": e.prompt}],
                "completion": [{"role": "assistant", "content": e.completion}],
            }
            for e in examples
        ]
    )


def _peft_config(settings: TrainSettings):
    if settings.lora is None:
        return None
    from peft import LoraConfig

    lora = settings.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target,
        task_type="CAUSAL_LM",
    )


def _progress_callback(ui: Progress, label: str):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """persyn's rich bar over optimizer steps (a resumed run starts at its checkpoint's step)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.stack = contextlib.ExitStack()
            self.advance = self.stack.enter_context(ui.task(label, total=state.max_steps))
            self.advance(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            self.advance(1)

        def on_train_end(self, args, state, control, **kwargs):
            self.stack.close()

    return ProgressCallback()


@contextlib.contextmanager
def _quiet_training() -> Iterator[None]:
    """transformers' and TRL's warnings and bars off for the duration: our bar and summary cover it."""
    import logging

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    trl_logger = logging.getLogger("trl")
    trl_level = trl_logger.level
    hf_logging.set_verbosity_error()
    trl_logger.setLevel(logging.ERROR)
    try:
        with quiet_libraries(datasets=True), warnings.catch_warnings():
            # deprecation notices between transformers 5 and peft/TRL: nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        trl_logger.setLevel(trl_level)


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint the trainer finished writing (it writes trainer_state.json last)."""
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / _STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


# ----------------------------------------------------------------------------- train


def _same_training(path: Path, fp: str, what: str) -> dict:
    """The training recorded in `path` (train.json or started.json), if it is this one (`fp`)."""
    info = json.loads(path.read_text())
    if info.get("fingerprint") != fp:
        raise TrainingConflict(
            f"{path.parent} holds {what} training of other settings, data or base model "
            f"(fingerprint {info.get('fingerprint')} != {fp}); use another folder or force=True"
        )
    return info


def _fingerprint(settings: TrainSettings, data_hash: str, base_name: str) -> str:
    return content_key("train", settings.fingerprint(), data_hash, base_name)


def build_trainer(
    examples: Sequence[SFTExample],
    base_model: str | Path,
    settings: TrainSettings,
    output_dir: str | Path,
    *,
    callbacks: Sequence[Any] = (),
):
    """The `SFTTrainer` for these examples and settings (its `train_dataset` is tokenised and
    masked: `labels` is -100 outside the completion). transformers' printing callback is removed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTTrainer

    device, dtype = _precision(settings)
    set_seed(settings.seed)  # before the LoRA matrices are drawn
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    # float32 master weights whatever the compute dtype: bf16 runs as autocast (sft_config).
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(settings, output_dir, device, dtype, len(examples)),
        train_dataset=to_hf_dataset(examples),
        processing_class=tokenizer,
        peft_config=_peft_config(settings),
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_student(
    examples: Sequence[SFTExample],
    base_model: str | Path,
    out_dir: str | Path,
    settings: TrainSettings,
    *,
    base_name: str | None = None,
    progress: Progress | None = None,
    label: str = "train",
    force: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Fine-tune `base_model` (a local model folder) on `examples`; see the module docstring.

    `base_name`: what the config calls the base model (a zoo alias, a hub id); it enters the
    fingerprint instead of the folder, whose path differs per machine. `callbacks`: extra
    `transformers.TrainerCallback`s. Returns the result of the finished (or found) training.
    """
    out = Path(out_dir)
    base_name = base_name or str(base_model)
    ui = progress or Progress(None)
    _check_examples(examples)
    data_hash = dataset_hash(examples)
    fp = _fingerprint(settings, data_hash, base_name)
    model_dir, adapter_dir = out / MODEL_DIR, out / ADAPTER_DIR
    ckpt_dir = out / CHECKPOINT_DIR
    result_path = out / RESULT_FILE
    found = _start(out, fp, settings, base_name, force)
    if found is not None:
        return found

    device, dtype = _precision(settings)
    resume = last_checkpoint(ckpt_dir)
    t0 = time.perf_counter()
    with _quiet_training():
        trainer = build_trainer(
            examples, base_model, settings, ckpt_dir, callbacks=[_progress_callback(ui, label), *callbacks]
        )
        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
        trained = [sum(1 for t in y if t != -100) for y in trainer.train_dataset["labels"]]
        if resume is not None:
            ui.say(f"{label}: resuming from {resume.name}")
        t1 = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        train_s = time.perf_counter() - t1
        state = trainer.state
        _save_model(trainer, settings, model_dir, adapter_dir)

    info = _result_info(
        settings, state, fp, base_name, data_hash, len(examples), lengths, trained, resume, t0, train_s
    )
    info.update(device=str(device), dtype=str(dtype).removeprefix("torch."))  # in their places
    epochs, loss_curve = settings.epochs, info["loss_curve"]
    write_json(result_path, info)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # the model is written: the resume point has done its job
    ui.say(
        f"{label}: {len(examples)} examples x {epochs:g} epochs, {state.global_step} steps, loss "
        f"{loss_curve[0][1]:.3f} -> {loss_curve[-1][1]:.3f}, {info['wall_s']:.0f} s ({info['dtype']}, "
        f"{info['device']}) -> {model_dir}"
        if loss_curve
        else f"{label}: done -> {model_dir}"
    )
    return TrainResult(out, model_dir, adapter_dir if settings.lora else None, fp, info)


def _result_info(
    settings, state, fp, base_name, data_hash, n_examples, lengths, trained, resume, t0, train_s
):
    """What result.json records of a finished training (device and dtype: filled by the caller)."""
    epochs = settings.epochs
    loss_curve = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h]
    # TRL has already cut rows to max_length: a row that long was (most likely) cut
    truncated = sum(1 for n in lengths if n >= settings.max_length)
    resumed_step = int(resume.name.rsplit("-", 1)[1]) if resume else None
    done_steps = state.global_step - (resumed_step or 0)
    info = {
        "fingerprint": fp,
        "base_model": base_name,
        "settings": settings.model_dump(mode="json"),
        "dataset_hash": data_hash,
        "examples": n_examples,
        "examples_at_max_length": truncated,
        "tokens_per_epoch": sum(lengths),
        "trained_tokens_per_epoch": sum(trained),
        "steps": state.global_step,
        "resumed_from_step": resumed_step,
        "loss_curve": loss_curve,
        "final_loss": loss_curve[-1][1] if loss_curve else None,
        "wall_s": round(time.perf_counter() - t0, 2),
        "train_s": round(train_s, 2),
        # tokens/s of this session's steps (a resumed run did only part of the epochs)
        "tokens_per_s": round(
            sum(lengths) * epochs * done_steps / max(state.max_steps, 1) / max(train_s, 1e-9),
            1,
        ),
        "device": None,  # set by the caller, which knows where it trained
        "dtype": None,
        "machine": machine_name(),
        "lora": settings.lora is not None,
        "versions": _versions(),
    }
    return info


def _check_examples(examples: Sequence[SFTExample]) -> None:
    if not examples:
        raise ValueError("no training examples")
    empty = [i for i, e in enumerate(examples) if not e.completion.strip()]
    if empty:
        raise ValueError(
            f"{len(empty)} example(s) have an empty completion (first: #{empty[0]}); drop them first"
        )


def _start(out: Path, fp: str, settings: TrainSettings, base_name: str, force: bool) -> TrainResult | None:
    """The finished training of this fingerprint in `out` (reused), or None after marking `out` as
    started by it (refusing a folder that another training started or finished)."""
    model_dir, adapter_dir = out / MODEL_DIR, out / ADAPTER_DIR
    result_path, started_path = out / RESULT_FILE, out / STARTED_FILE
    if force and out.exists():
        for p in (result_path, started_path, model_dir, adapter_dir, out / CHECKPOINT_DIR):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if result_path.is_file():
        info = _same_training(result_path, fp, "a finished")
        return TrainResult(out, model_dir, adapter_dir if settings.lora else None, fp, info, reused=True)
    if started_path.is_file():
        _same_training(started_path, fp, "an unfinished")
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        started_path,
        {"fingerprint": fp, "settings": settings.model_dump(mode="json"), "base_model": base_name},
    )
    return None


def _save_model(trainer, settings: TrainSettings, model_dir: Path, adapter_dir: Path) -> None:
    """The trained model, merged (and its LoRA adapter beside it), with the tokenizer."""
    for p in (model_dir, adapter_dir):
        if p.exists():
            shutil.rmtree(p)
    final = trainer.model
    if settings.lora is not None:
        final.save_pretrained(adapter_dir)
        final = final.merge_and_unload()
    final.save_pretrained(model_dir)
    trainer.processing_class.save_pretrained(model_dir)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
