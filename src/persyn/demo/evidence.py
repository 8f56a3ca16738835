"""The evidence miniature (`persyn demo --task evidence`, `benchmarks/reproduce.py`): a project in
which a 135M student can measurably learn and routing can matter, with held-out sets large enough
to test a difference (docs/student.md, "The evidence miniature").

    cfg = write_evidence("runs/evidence", size="quick")   # then: persyn run CFG; persyn compare CFG ...

Two kinds of prompt, both checked exactly:

* instructions carrying one or two verifiable constraints drawn from IFEval's registry
  (demo/constraint_prompts.py), scored as the share of constraints met (strict);
* arithmetic word problems of level 1 (demo/math_problems.py), checked by the answer checker: the
  untrained student is near the floor above level 1 (docs/student.md, the teacher survey).

The pool is three teachers whose strengths differ by prompt (measured, docs/student.md):
Qwen2.5-Coder-0.5B-Instruct (strong at the math), Gemma-3-270M (a base model continuing worked
examples of both kinds) and SmolLM2-135M-Instruct (the student's own family, the most learnable
answers). Quality needs no judge: every prompt has an answer or constraints.

The eval sets are disjoint from the training prompts (by base instruction for the constrained
ones, by text and generator seed for the math): a `test` split that every arm is scored on and a
`validation` split that only chooses PerSyn's alpha (`persyn compare --alpha-grid`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from persyn.defaults import default_strategies
from persyn.demo import write_jsonl
from persyn.demo.constraint_prompts import constraint_splits
from persyn.demo.math_problems import generate_math_problems
from persyn.prompts import normalise_text
from persyn.scoring.constraints import draw_constraint
from persyn.store.store import RunStore
from persyn.util.atomic import atomic_write
from persyn.util.errors import PersynError

__all__ = [
    "EVIDENCE_DESIGN",
    "SIZES",
    "EvidenceSize",
    "evidence_design",
    "evidence_fewshot_template",
    "write_evidence",
]

MATH_LEVELS = (1,)  # the student is at the floor above level 1 (docs/student.md, teacher survey)
TRAIN_SEED, TEST_SEED, VALIDATION_SEED, SHOT_SEED = 0, 1, 2, 99


@dataclass(frozen=True)
class EvidenceSize:
    """Items per category: training prompts, calibration prompts (of the training ones), test
    items (scored by log-likelihood where there is an answer) and how many of them are answered,
    validation items, and the answer lengths."""

    train: int
    calibration: int
    test: int  # math: scored by log-likelihood; constraints: the items answered come first
    test_answered: int  # math answered (accuracy)
    constraints_answered: int  # constrained test items answered (they have no log-likelihood metric)
    validation: int
    max_new_tokens: int
    eval_max_new_tokens: int


SIZES = {
    # The design: >= 300 test items per category, >= 150 answered.
    "full": EvidenceSize(
        train=120,
        calibration=40,
        test=300,
        test_answered=150,
        constraints_answered=300,
        validation=60,
        max_new_tokens=320,
        eval_max_new_tokens=320,
    ),
    # The same design with fewer items, to see it work in well under an hour on two cores.
    "quick": EvidenceSize(
        train=40,
        calibration=16,
        test=60,
        test_answered=24,
        constraints_answered=40,
        validation=24,
        max_new_tokens=320,
        eval_max_new_tokens=320,
    ),
}

#: The student's training: the pilot's choice (benchmarks/pilot.py, docs/student.md).
TRAINING = {"epochs": 1.0, "learning_rate": 3.0e-4}

#: What `persyn compare` is asked (benchmarks/reproduce.py passes these): the pre-registered design.
EVIDENCE_DESIGN = {
    "strategies": default_strategies(family=True, oracle=True),  # the pool has SmolLM2, the student's family
    "oracle": True,
    "alpha_grid": [0.0, 0.2, 0.4, 0.6, 0.8],
    "seeds": [0, 1],
    "primary": "persyn:strong:constraints_strict",
}


def evidence_design(size: str) -> dict:
    """The design `persyn compare` is asked for at `size`: the quick size has a coarser alpha grid
    (three trainings fewer), everything else is the same."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    return {**EVIDENCE_DESIGN, "alpha_grid": [0.0, 0.4, 0.8]} if size == "quick" else dict(EVIDENCE_DESIGN)


EVIDENCE_CONFIG = """\
# persyn evidence miniature ({size}): written by `persyn demo --task evidence`; docs/student.md.
# Student SmolLM2-135M-Instruct. Teachers: Qwen2.5-Coder-0.5B-Instruct, Gemma-3-270M continuing
# worked examples, and SmolLM2-135M-Instruct itself (the student's family).
# Quality: constraints met (IFEval checkers) or the answer checked; no judge needed.
seed: 0
prompts: {{path: {prompts}, id_field: id, answer_field: answer}}
student: {{model: zoo:smollm2-135m-instruct, family: smollm}}
teachers:
  - {{name: qwen, model: zoo:qwen2.5-coder-0.5b-instruct, family: qwen}}
  - name: gemma-fewshot
    model: zoo:gemma3-270m
    family: gemma
    template: completion
    completion_template: |-
{fewshot}
    generation: {{max_new_tokens: {max_new_tokens}, stop: ["\\nQuestion:"]}}
  - {{name: smollm, model: zoo:smollm2-135m-instruct, family: smollm}}
generation: {{max_new_tokens: {max_new_tokens}}}
quality: {{method: auto}}
calibration: {{size: {calibration}, selection: diverse}}
router: {{encoder: zoo:minilm-l6-v2, alpha: 0.4}}
output: {{dir: ., dataset_name: persyn-evidence}}
# LoRA; learning rate and epochs chosen by benchmarks/pilot.py on the validation split (docs/student.md).
train:
  epochs: {epochs}
  learning_rate: {learning_rate}
  batch_size: 8
  lora: {{r: 16, alpha: 32, dropout: 0.05, target: all-linear}}
eval:
  sets:
    - name: constraints-test
      path: eval-constraints-test.jsonl
      id_field: id
      answer_limit: {constraints_answered}
    - name: math-test
      path: eval-math-test.jsonl
      id_field: id
      answer_field: answer
      answer_limit: {answered}
    - {{name: constraints-val, path: eval-constraints-val.jsonl, id_field: id, split: validation}}
    - {{name: math-val, path: eval-math-val.jsonl, id_field: id, answer_field: answer, split: validation}}
  max_new_tokens: {eval_max_new_tokens}
  win_rate: false
"""


class EvidenceSettingsError(PersynError, ValueError):
    """The folder holds an evidence run made with other settings."""


def evidence_fewshot_template() -> str:
    """A completion template for a base model: two constrained instructions answered to the letter
    and two level-1 problems worked out, then the question (`{prompt}`). Both kinds, so that the
    teacher is a plausible one for every prompt."""
    _, lower = draw_constraint("change_case:english_lowercase", SHOT_SEED)
    _, bullets = draw_constraint("detectable_format:number_bullet_lists", SHOT_SEED, num_bullets=2)
    shots = [
        (
            f"Write a short note inviting a neighbour to a garden party. {lower}",
            "hi sam, we are having a small garden party on saturday at four. there will be lemonade, "
            "snacks and music. we would love to see you there!",
        ),
        (
            f"Give tips for staying focused while studying. {bullets}",
            "* Put your phone in another room before you start.\n* Work in 25-minute blocks with a "
            "short break after each.",
        ),
    ]
    shots += [
        (p.prompt, f"{p.expression} = {p.answer}. The answer is {p.answer}.")
        for p in generate_math_problems(2, seed=SHOT_SEED, levels=MATH_LEVELS)
    ]
    body = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in shots)
    return body.replace("{", "{{").replace("}", "}}") + "Question: {prompt}\nAnswer:"


def _math_rows(n: int, seed: int, exclude: set[str]) -> list[dict]:
    """`n` level-1 problems of generator seed `seed`, none whose text is in `exclude`."""
    want = n
    while True:  # a longer draw is the shorter one plus more (the generator's prefix rule)
        kept = [
            p
            for p in generate_math_problems(want, seed=seed, levels=MATH_LEVELS)
            if normalise_text(p.prompt) not in exclude
        ]
        if len(kept) >= n or want > 20 * n + 100:
            break
        want += n
    if len(kept) < n:
        raise ValueError(f"only {len(kept)} distinct level-1 problems for seed {seed}, {n} wanted")
    return [
        {"id": p.id, "prompt": p.prompt, "answer": p.answer, "category": "math", "difficulty": p.difficulty}
        for p in kept[:n]
    ]


def write_evidence(out: str | Path, size: str = "quick") -> Path:
    """Write the evidence project of `size` (`SIZES`) into `out`: the training prompts, the four
    eval files and the config; returns the config path. A run there made with other settings is
    refused."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    s = SIZES[size]
    splits = constraint_splits(train=s.train, validation=s.validation, test=s.test, pilot=0, seed=TRAIN_SEED)
    train_math = _math_rows(s.train, TRAIN_SEED, set())
    seen = {normalise_text(r["prompt"]) for r in train_math}
    test_math = _math_rows(s.test, TEST_SEED, seen)
    seen |= {normalise_text(r["prompt"]) for r in test_math}
    val_math = _math_rows(s.validation, VALIDATION_SEED, seen)
    # Kinds in turn, so that the calibration draw and any prefix see both.
    prompts = [r for pair in zip(splits.train, train_math, strict=True) for r in pair]
    fewshot = "\n".join(("      " + line).rstrip() for line in evidence_fewshot_template().split("\n"))
    out = Path(out)
    cfg_path = out / "persyn-evidence.yaml"
    prompts_name = f"prompts-evidence-{size}.jsonl"
    text = EVIDENCE_CONFIG.format(
        size=size,
        prompts=prompts_name,
        fewshot=fewshot,
        max_new_tokens=s.max_new_tokens,
        calibration=2 * s.calibration,
        answered=s.test_answered,
        constraints_answered=s.constraints_answered,
        eval_max_new_tokens=s.eval_max_new_tokens,
        epochs=TRAINING["epochs"],
        learning_rate=TRAINING["learning_rate"],
    )
    if cfg_path.exists() and cfg_path.read_text() != text and RunStore.exists(out):
        raise EvidenceSettingsError(
            f"{out} holds an evidence run made with other settings; use another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / prompts_name, prompts)
    write_jsonl(out / "eval-constraints-test.jsonl", splits.test)
    write_jsonl(out / "eval-math-test.jsonl", test_math)
    write_jsonl(out / "eval-constraints-val.jsonl", splits.validation)
    write_jsonl(out / "eval-math-val.jsonl", val_math)
    atomic_write(cfg_path, text)
    return cfg_path
