"""Student training (persyn.student.train) on the tiny random Llama: the loss mask, the loss falling,
a finished run reused, a changed one refused, and a SIGKILLed run resuming from its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from persyn.student.settings import LoraSettings, TrainSettings  # noqa: E402
from persyn.student.train import (  # noqa: E402
    SFTExample,
    TrainingConflict,
    build_trainer,
    dataset_hash,
    load_sft_examples,
    train_student,
)
from persyn.zoo import resolve_model  # noqa: E402

TINY = "zoo:tiny-llama-s0"


def _examples(n: int = 16) -> list[SFTExample]:
    return [SFTExample("What is 2+2?", "The answer is 4.")] * n


def test_loss_mask_covers_the_response_and_its_end_of_turn_only(tiny_engine, tmp_path):
    # SmolLM2's chat template has no {% generation %} markers: TRL must still mask the prompt.
    ex = [SFTExample("Name a colour.", "Blue, like the sky."), SFTExample("Add 3 and 4.", "3 + 4 = 7.")]
    trainer = build_trainer(ex, resolve_model(TINY), TrainSettings(lora=None, dtype="float32"), tmp_path)
    tok = trainer.processing_class
    for e, row in zip(ex, trainer.train_dataset, strict=True):
        ids, labels = row["input_ids"], row["labels"]
        start = next(i for i, y in enumerate(labels) if y != -100)
        assert all(y == -100 for y in labels[:start])
        assert labels[start:] == ids[start:]
        # The prompt part is exactly what the engines render at inference (system prompt included)
        assert tok.decode(ids[:start]) == tiny_engine.render(e.prompt)
        assert tok.decode(ids[start:]) == e.completion + "<|im_end|>\n"


def test_loss_falls_on_a_repeated_example_and_a_finished_run_is_not_redone(tmp_path):
    settings = TrainSettings(epochs=3, batch_size=4, learning_rate=1e-3, lora=None, dtype="float32")
    out = tmp_path / "student"
    result = train_student(_examples(), resolve_model(TINY), out, settings, base_name=TINY)
    losses = [loss for _, loss in result.loss_curve]
    assert len(losses) == result.info["steps"] == 12
    assert losses[-1] < 0.7 * losses[0]
    info = json.loads((out / "train.json").read_text())
    assert info["dataset_hash"] == dataset_hash(_examples())
    assert info["examples"] == 16 and info["dtype"] == "float32" and info["resumed_from_step"] is None
    assert (result.model_dir / "model.safetensors").is_file()
    assert (result.model_dir / "tokenizer.json").is_file()
    assert not (out / "checkpoints").exists()

    weights = result.model_dir / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = train_student(_examples(), resolve_model(TINY), out, settings, base_name=TINY)
    assert again.reused and again.info == info and weights.stat().st_mtime_ns == mtime

    with pytest.raises(TrainingConflict, match="finished training"):  # other settings
        train_student(_examples(), resolve_model(TINY), out, settings.model_copy(update={"epochs": 2}))
    with pytest.raises(TrainingConflict):  # other data
        train_student(_examples(8), resolve_model(TINY), out, settings, base_name=TINY)
    # Where it runs and how often it checkpoints change nothing: still the finished run
    moved = settings.model_copy(update={"save_steps": 3, "device": "cpu"})
    assert train_student(_examples(), resolve_model(TINY), out, moved, base_name=TINY).reused


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from transformers import TrainerCallback
    from persyn.student.settings import TrainSettings
    from persyn.student.train import SFTExample, train_student

    class KillAfterCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # called once the checkpoint is written
            if state.global_step == 4:
                os.kill(os.getpid(), signal.SIGKILL)

    settings = TrainSettings.model_validate_json(sys.argv[3])
    examples = [SFTExample(f"Question {i}: what is {i} + {i}?", f"The answer is {2 * i}.") for i in range(24)]
    train_student(examples, sys.argv[1], sys.argv[2], settings, callbacks=[KillAfterCheckpoint()])
    """
)


def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    base = resolve_model(TINY)
    settings = TrainSettings(
        epochs=2,
        batch_size=4,
        learning_rate=1e-3,
        dtype="float32",
        save_steps=2,
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
    )
    examples = [SFTExample(f"Question {i}: what is {i} + {i}?", f"The answer is {2 * i}.") for i in range(24)]
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, base, str(out), settings.model_dump_json()],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (out / "train.json").exists()

    resumed = train_student(examples, base, out, settings)
    assert resumed.info["resumed_from_step"] == 4
    assert resumed.info["steps"] == 12  # 24 examples / 4 per batch x 2 epochs
    # The loss curve covers the whole training; after the resume point it matches a clean run
    clean = train_student(examples, base, tmp_path / "clean", settings)
    steps = [s for s, _ in resumed.loss_curve]
    assert steps == list(range(1, 13))
    assert [s for s, _ in clean.loss_curve] == steps
    for (_, a), (_, b) in zip(resumed.loss_curve, clean.loss_curve, strict=True):
        assert a == pytest.approx(b, rel=1e-3)
    assert (resumed.adapter_dir / "adapter_config.json").is_file()
    assert (resumed.model_dir / "model.safetensors").is_file()


def test_load_sft_examples_reads_both_exported_shapes_and_names_a_bad_line(tmp_path):
    pc = tmp_path / "x.prompt_completion.jsonl"
    msgs = tmp_path / "x.messages.jsonl"
    pc.write_text(
        json.dumps(
            {
                "prompt": [{"role": "user", "content": "Hi?"}],
                "completion": [{"role": "assistant", "content": "Hello."}],
                "prompt_id": "p1",
                "teacher": "qwen",
            }
        )
        + "\n"
    )
    msgs.write_text(
        json.dumps(
            {
                "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
                "prompt_id": "p1",
            }
        )
        + "\n\n"
        + json.dumps({"text": "no"})
        + "\n"
    )
    assert load_sft_examples(pc) == [SFTExample("Hi?", "Hello.", "p1")]
    with pytest.raises(ValueError, match=r"messages.jsonl:3: no prompt/completion or messages"):
        load_sft_examples(msgs)


def test_load_sft_examples_reads_what_persyn_export_writes(tmp_path):
    from persyn.dataset import DataCard, ExportRecord, export_dataset

    records = [
        ExportRecord(
            "p1",
            "What is 2 + 2?",
            "2 + 2 = 4. The answer is 4.",
            "qwen",
            "persyn",
            "4",
            {"qwen": 0.3, "gemma": -0.1},
        ),
        ExportRecord("p2", "Describe rain.\nBriefly.", "Water falls from clouds.", "gemma", "persyn"),
    ]
    card = DataCard("t", "persyn", {}, {"qwen": 1, "gemma": 1}, 2, {}, {})
    paths = export_dataset(records, tmp_path, formats=["messages", "prompt_completion"], name="x", card=card)
    want = [SFTExample(r.prompt, r.response, r.prompt_id) for r in records]
    assert load_sft_examples(paths["prompt_completion"]) == want
    assert load_sft_examples(paths["messages"]) == want


def test_empty_completions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="empty completion"):
        train_student([SFTExample("a", " ")], resolve_model(TINY), tmp_path, TrainSettings())
