"""The bundled demo prompt set: generated math word problems (with answers) and hand-written
general instructions, shipped inside the package so `make demo` needs no download.

Modules: `bundled` (the demo prompt set and its held-out split), `math_problems`,
`math_templates` and `math_vocabulary` (the math generator), `constraint_prompts` (instructions with
IFEval constraints), `project` (the folder `persyn demo` writes).
This file only re-exports the package's public names.
"""

from persyn.demo.bundled import (
    EVAL_RESERVE_PER_CATEGORY,
    INSTRUCTION_CATEGORIES,
    MathProblem,
    demo_eval_prompts,
    demo_prompts,
    fewshot_template,
    format_number,
    generate_math_problems,
    load_instructions,
    split_instructions,
    write_demo_prompts,
    write_jsonl,
)

__all__ = [
    "EVAL_RESERVE_PER_CATEGORY",
    "INSTRUCTION_CATEGORIES",
    "MathProblem",
    "demo_eval_prompts",
    "demo_prompts",
    "fewshot_template",
    "format_number",
    "generate_math_problems",
    "load_instructions",
    "split_instructions",
    "write_demo_prompts",
    "write_jsonl",
]
