"""The demo project (`persyn demo`, `make demo`): the bundled prompts, held-out eval sets and a
config with three real zoo teachers on CPU, written into one folder.

    cfg_path = write_demo("runs/demo")      # then: persyn run runs/demo/persyn-demo.yaml

The teacher pool is chosen so that routing has something to decide (benchmarks/teacher_pool.py,
docs/pipeline.md): the student is not a teacher, and the teachers solve the math at clearly
different rates and write differently (full working, the number alone, a base model's few-shot
completion).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from persyn.demo.bundled import (
    INSTRUCTION_CATEGORIES,
    LEVELS,
    demo_eval_prompts,
    demo_prompts,
    fewshot_template,
    instruction_pool,
    write_jsonl,
)
from persyn.store.store import RunStore
from persyn.util.atomic import atomic_write
from persyn.util.errors import PersynError

__all__ = [
    "CONCISE_SYSTEM_PROMPT",
    "DEMO_CONFIG",
    "DEMO_MODELS",
    "SHORT_ANSWER_CATEGORIES",
    "SHORT_ANSWER_LEVELS",
    "DemoSettingsError",
    "write_demo",
]

# qwen-concise: the same model as qwen, told to skip the working (a distinct teacher as a config
# declares it: its answers, scores and routes are its own).
CONCISE_SYSTEM_PROMPT = "Reply with the final answer only, as a number, in the form: The answer is N."
TRAIN_SEED, EVAL_SEED = 0, 1  # math generator seeds: training prompts, held-out eval problems
# `persyn demo`'s prompts: ones whose answers end well within 512 tokens for every teacher (the demo
# never shortens answers to fit its time; demo/sizing.py). Qwen's worked answers to level-1/2 math
# run 100-210 tokens (levels 3-5 run longer and loop more); extraction answers quote the text.
SHORT_ANSWER_LEVELS = (1, 2)
SHORT_ANSWER_CATEGORIES = ("extraction",)
# The zoo models the demo config names (converted on the first run, before it is sized).
DEMO_MODELS = ("zoo:qwen2.5-coder-0.5b-instruct", "zoo:gemma3-270m", "zoo:smollm2-135m-instruct")

DEMO_CONFIG = """\
# persyn demo: written by `persyn demo`; re-run with `persyn run {name}` (it resumes).
# Student SmolLM2-135M, which is not a teacher. Three teachers on CPU that differ at the math
# (benchmarks/teacher_pool.py): Qwen2.5-Coder-0.5B with its full working, the same model told to
# give the number only, and Gemma-3-270M (a base model) continuing three worked examples.
# Quality: exact answers on the math prompts, the Qwen 0.5B judge on the instructions (quality.method
# auto). The 1.5B judge orders labelled pairs better (docs/router.md) but its first conversion and
# judging cost a minute of the demo's 8; for real runs use it, a larger judge or a reward model.
seed: 0
prompts: {{path: {prompts}, id_field: id, answer_field: answer}}
student: {{model: zoo:smollm2-135m-instruct, family: smollm}}
teachers:
  - {{name: qwen, model: zoo:qwen2.5-coder-0.5b-instruct, family: qwen}}
  - name: qwen-concise
    model: zoo:qwen2.5-coder-0.5b-instruct
    family: qwen
    system_prompt: "{concise}"
  - name: gemma-fewshot
    model: zoo:gemma3-270m
    family: gemma
    template: completion                  # a base model: worked examples, then "Question: ...\\nAnswer:"
    completion_template: |-
{fewshot}
    # stop: it would go on to write the next question itself. No second try at a cut answer: a base
    # model's cut answers here are loops, and in three demos 17 of 19 second tries (1024 tokens)
    # were cut again (the other two the same made-up answer), at the cost of the teachers' longest
    # generation and the longest texts the judge and the student then read.
    generation:
      max_new_tokens: {max_new_tokens}
      stop: ["\\nQuestion:"]
      regenerate_cut: {{enabled: false}}
generation: {{max_new_tokens: {max_new_tokens}}}
quality: {{method: auto, judge: {{model: zoo:qwen2.5-coder-0.5b-instruct}}}}
calibration: {{size: {calibration}, selection: diverse}}
router: {{encoder: zoo:minilm-l6-v2, alpha: 0.4}}
output: {{dir: ., dataset_name: persyn-demo}}
# The student's side (persyn train / eval / compare); the eval files are held out from the prompts.
train: {{epochs: 1, lora: {{r: 16, alpha: 32, dropout: 0.05, target: all-linear}}}}
eval:
  sets:
    - {{name: math, path: {eval_math_file}, id_field: id, answer_field: answer, answer_limit: {answer_limit}}}
    - {{name: instructions, path: {eval_instr_file}, id_field: id}}
  max_new_tokens: {eval_max_new_tokens}
"""


class DemoSettingsError(PersynError, ValueError):
    """The demo directory holds a run made with other demo settings."""


def write_demo(
    out: str | Path,
    *,
    n_prompts: int = 160,
    n_instructions: int | None = None,
    calibration: int = 48,
    max_new_tokens: int = 96,
    eval_math: int = 100,
    eval_answer_limit: int = 48,
    eval_instructions: int = 16,
    eval_max_new_tokens: int | None = None,
    math_levels: Sequence[int] = LEVELS,
    instruction_categories: Sequence[str] = INSTRUCTION_CATEGORIES,
) -> Path:
    """Write the bundled demo prompts (`n_instructions` instructions of `instruction_categories`,
    by default half or as many as there are, the rest math of `math_levels` with exact answers),
    the held-out eval files (`eval_math` problems, the first `eval_answer_limit` of them answered,
    and `eval_instructions` instructions) and a demo config into `out`; returns the config path.
    An existing demo run with other settings is refused. `eval_max_new_tokens` defaults to
    `max_new_tokens`. `persyn demo` passes `SHORT_ANSWER_LEVELS` and `SHORT_ANSWER_CATEGORIES`."""
    if n_prompts < 8:
        raise ValueError("the demo needs at least 8 prompts")
    if not 4 <= calibration <= n_prompts:
        raise ValueError(f"calibration must be between 4 and the number of prompts ({n_prompts})")
    train_pool = instruction_pool(instruction_categories)
    n_instr = min(n_prompts // 2, len(train_pool)) if n_instructions is None else n_instructions
    if not 0 <= n_instr <= min(n_prompts, len(train_pool)):
        raise ValueError(f"n_instructions must be between 0 and {min(n_prompts, len(train_pool))}")
    if not 0 <= eval_answer_limit <= eval_math:
        raise ValueError(f"eval_answer_limit must be between 0 and eval_math ({eval_math})")
    n_math = n_prompts - n_instr
    rows = demo_prompts(
        n_math=n_math,
        n_instructions=n_instr,
        seed=TRAIN_SEED,
        levels=math_levels,
        categories=instruction_categories,
    )
    eval_m, eval_i = demo_eval_prompts(
        n_math=eval_math,
        n_instructions=eval_instructions,
        seed=EVAL_SEED,
        exclude=[r["prompt"] for r in rows],
    )
    out = Path(out)
    cfg_path = out / "persyn-demo.yaml"
    # The file name tells the draw apart (the settings check compares config texts).
    which = ""
    if tuple(math_levels) != LEVELS:
        which += "-L" + "".join(map(str, math_levels))
    if tuple(instruction_categories) != INSTRUCTION_CATEGORIES:
        which += "-" + "-".join(instruction_categories)
    prompts_name = f"prompts-{n_math}m{n_instr}i{which}.jsonl"
    eval_math_file = f"eval-math-{eval_math}.jsonl"
    eval_instr_file = f"eval-instructions-{eval_instructions}.jsonl"
    fewshot = "\n".join(("      " + line).rstrip() for line in fewshot_template().split("\n"))
    text = DEMO_CONFIG.format(
        name=cfg_path,
        prompts=prompts_name,
        concise=CONCISE_SYSTEM_PROMPT,
        fewshot=fewshot,
        calibration=calibration,
        max_new_tokens=max_new_tokens,
        eval_math_file=eval_math_file,
        eval_instr_file=eval_instr_file,
        answer_limit=eval_answer_limit,
        eval_max_new_tokens=max_new_tokens if eval_max_new_tokens is None else eval_max_new_tokens,
    )
    if cfg_path.exists() and cfg_path.read_text() != text and RunStore.exists(out):
        raise DemoSettingsError(
            f"{out} holds a demo run made with other settings; pass --force to start afresh, "
            "or --dir for a new one"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / prompts_name, rows)
    write_jsonl(out / eval_math_file, eval_m)
    write_jsonl(out / eval_instr_file, eval_i)
    atomic_write(cfg_path, text)
    return cfg_path
