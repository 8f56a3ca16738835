"""A few steps of LoRA on the real SmolLM2-135M raise its log-likelihood of the answers it was trained
on, as the engines measure it, once the merged model is loaded like any other."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from conftest import make_engine  # noqa: E402

from persyn.student.settings import LoraSettings, TrainSettings  # noqa: E402
from persyn.student.train import SFTExample, train_student  # noqa: E402
from persyn.zoo import resolve_model  # noqa: E402

pytestmark = [pytest.mark.zoo, pytest.mark.slow]


def test_lora_steps_raise_the_students_loglik_of_its_training_answers(smollm_engine, tmp_path):
    from persyn.demo import generate_math_problems

    problems = generate_math_problems(8, seed=5, levels=(1, 2))
    examples = [
        SFTExample(p.prompt, f"{p.expression} = {p.answer}. The answer is {p.answer}.") for p in problems
    ]
    prompts, answers = [e.prompt for e in examples], [e.completion for e in examples]
    before = smollm_engine.loglik(prompts, answers)

    settings = TrainSettings(
        epochs=3,
        batch_size=4,
        learning_rate=1e-3,
        lora=LoraSettings(r=8, alpha=16, dropout=0.0),
        save_steps=100,
    )
    base = "zoo:smollm2-135m-instruct"
    result = train_student(examples, resolve_model(base), tmp_path / "s", settings, base_name=base)
    assert result.info["lora"] and (result.adapter_dir / "adapter_model.safetensors").is_file()
    trained = make_engine(str(result.model_dir))  # the merged model, default spec like the base engine
    try:
        after = trained.loglik(prompts, answers)
    finally:
        trained.close()
    gain = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(gain) / len(gain) > 0.2, (before, after)
    assert sum(g > 0 for g in gain) >= 7
