"""The demo project (`persyn demo`, `make demo`): the bundled prompts and a config with three real
zoo teachers on CPU, written into one folder.

    cfg_path = write_demo("runs/demo")      # then: persyn run runs/demo/persyn-demo.yaml
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from persyn.atomic import atomic_write
from persyn.demo import load_instructions, write_demo_prompts
from persyn.errors import PersynError
from persyn.store.store import RunStore

__all__ = ["DEMO_CONFIG", "DemoSettingsError", "DemoSize", "demo_size", "write_demo"]

DEMO_CONFIG = """\
# persyn demo: written by `persyn demo`; re-run with `persyn run {name}` (it resumes).
# Three real zoo teachers on CPU; student SmolLM2-135M. Quality: exact answers on the math
# prompts, the Qwen judge on the instructions (quality.method auto).
seed: 0
prompts: {{path: prompts.jsonl, id_field: id, answer_field: answer}}
student: {{model: zoo:smollm2-135m-instruct, family: smollm}}
teachers:
  - {{name: qwen, model: zoo:qwen2.5-coder-0.5b-instruct, family: qwen}}
  - name: gemma
    model: zoo:gemma3-270m
    template: completion                  # a base model: "Question: ...\\nAnswer:"
    family: gemma
    # stop: it would go on to write the next question itself
    generation: {{max_new_tokens: {max_new_tokens}, stop: ["\\nQuestion:"]}}
  - {{name: smollm, model: zoo:smollm2-135m-instruct, family: smollm}}
generation: {{max_new_tokens: {max_new_tokens}}}
quality: {{method: auto, judge: {{model: zoo:qwen2.5-coder-0.5b-instruct}}}}
calibration: {{size: {calibration}, selection: diverse}}
router: {{encoder: zoo:minilm-l6-v2, alpha: 0.4}}
output: {{dir: ., dataset_name: persyn-demo}}
executor: {{batch_size: 16}}
"""


@dataclass(frozen=True)
class DemoSize:
    prompts: int
    calibration: int
    max_new_tokens: int
    why: str


def demo_size() -> DemoSize:
    """The demo's size for this machine. Where models run in bfloat16 or on a GPU, the full demo;
    where `dtype: auto` falls back to float32 (a CPU without native bf16: float32 matmuls run at
    about half the speed of native bf16 ones), fewer prompts and shorter answers, so that it still
    ends in minutes on two cores. Every stage and the three teachers stay (docs/pipeline.md)."""
    from persyn.hardware import cpu_info, resolve_device

    if resolve_device("auto").type != "cpu" or cpu_info().native_bf16:
        return DemoSize(160, 48, 96, "models run in bfloat16 or on a GPU here")
    return DemoSize(96, 32, 64, "no native bfloat16 on this CPU: models run in float32, so a smaller demo")


class DemoSettingsError(PersynError, ValueError):
    """The demo directory holds a run made with other demo settings."""


def write_demo(
    out: str | Path, *, n_prompts: int = 160, calibration: int = 48, max_new_tokens: int = 96
) -> Path:
    """Write the bundled demo prompts (half math with exact answers, half instructions) and a demo
    config into `out`; returns the config path. An existing demo with other settings is refused."""
    if n_prompts < 8:
        raise ValueError("the demo needs at least 8 prompts")
    if not 4 <= calibration <= n_prompts:
        raise ValueError(f"calibration must be between 4 and the number of prompts ({n_prompts})")
    n_instr = min(n_prompts // 2, len(load_instructions()))
    n_math = n_prompts - n_instr
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "persyn-demo.yaml"
    text = DEMO_CONFIG.format(name=cfg_path, calibration=calibration, max_new_tokens=max_new_tokens)
    text = text.replace(
        "prompts: {path: prompts.jsonl", f"prompts: {{path: prompts-{n_math}m{n_instr}i.jsonl"
    )
    if cfg_path.exists() and cfg_path.read_text() != text and RunStore.exists(out):
        raise DemoSettingsError(
            f"{out} holds a demo run made with other settings; pass --force to start afresh, "
            "or --dir for a new one"
        )
    write_demo_prompts(
        out / f"prompts-{n_math}m{n_instr}i.jsonl", n_math=n_math, n_instructions=n_instr, seed=0
    )
    atomic_write(cfg_path, text)
    return cfg_path
