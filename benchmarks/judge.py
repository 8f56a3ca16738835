"""How often does an LM judge prefer the good answer? Pairwise accuracy on the shipped labelled set.

The set is `persyn/data/judge_triples.jsonl`: 120 hand-written (prompt, good, bad) triples, 30 each of
math, facts, code and instructions, the bad answer plausible (a slipped sign, the wrong capital, an
off-by-one, an ignored constraint). A pointwise judge (what the pipeline uses: log P(Yes) - log P(No)
for one response) is right on a triple when it scores the good answer higher; ties count half.
The pairwise variant shows the judge both answers and asks whether A is better than B, in both orders;
it is right when it prefers A more when A is the good answer (the order bias cancels), and the
single-order accuracies show that bias. Intervals: 95% bootstrap over triples; "vs default" is the
paired difference to the shipped default template, also bootstrapped.

    .venv/bin/python benchmarks/judge.py                       # the three zoo judges x every template
    .venv/bin/python benchmarks/judge.py --judge zoo:qwen2.5-coder-0.5b-instruct --templates default
    .venv/bin/python benchmarks/judge.py --judge /models/my-judge --template-file my_template.txt
    .venv/bin/python benchmarks/judge.py --write   # also record the pointwise figures in
                                                   # persyn/data/judge_accuracy.json (the report reads it)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from importlib import resources
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
# Python puts this script's folder first on sys.path, where the sibling benchmark http.py would
# shadow the standard library's http for torch.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from persyn.engines import load_engine  # noqa: E402
from persyn.engines.base import DEFAULT_JUDGE_TEMPLATE  # noqa: E402
from persyn.engines.spec import EngineSpec  # noqa: E402
from persyn.scoring.reliability import ACCURACY_FILE, judge_id  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the labelled set's reader
from judge_set import DOMAINS, bootstrap_interval, load_triples, pair_outcomes  # noqa: E402

ZOO_JUDGES = ("zoo:qwen2.5-coder-0.5b-instruct", "zoo:smollm2-135m-instruct", "zoo:gemma3-270m")

# Pointwise judging prompts tried; "default" is whatever the engines ship (engines/base.py). The
# first measurement called today's default "correct" and measured "graded", the earlier default.
TEMPLATES = {
    "default": DEFAULT_JUDGE_TEMPLATE,
    "graded": (
        "You are grading an answer to a user's request.\n\n"
        "Request:\n{prompt}\n\n"
        "Answer:\n{response}\n\n"
        "Is the answer correct, helpful and complete? Reply with Yes or No only."
    ),
    "strict": (
        "You are a strict grader. Check the answer below for factual mistakes, calculation errors, bugs "
        "and ignored instructions.\n\n"
        "Request:\n{prompt}\n\n"
        "Answer:\n{response}\n\n"
        "Is the answer free of mistakes, and does it follow every instruction? Reply with Yes or No only."
    ),
    # Few-shot, completion style (docs/router.md's earlier spot check found it the most decisive):
    # four worked verdicts on items that are not in the set, then the one to judge.
    "fewshot": (
        "Decide whether each answer is correct and does what the question asks.\n\n"
        "Question: What is 5 + 7?\nAnswer: 5 + 7 = 12.\nCorrect: Yes\n\n"
        "Question: What is the capital of France?\nAnswer: Lyon.\nCorrect: No\n\n"
        "Question: Write a Python expression for the number of items in the list xs.\nAnswer: len(xs)\n"
        "Correct: Yes\n\n"
        "Question: Answer with one word: which planet is known as the Red Planet?\n"
        "Answer: The Red Planet is Mars.\nCorrect: No\n\n"
        "Question: {prompt}\nAnswer: {response}\nCorrect:"
    ),
}
PAIRWISE = (
    "Two answers to the same request follow.\n\n"
    "Request:\n{prompt}\n\n"
    "{response}\n\n"
    "Is Answer A better than Answer B (more correct, and following the request more closely)? "
    "Reply with Yes or No only."
)


def _pair(a: str, b: str) -> str:
    return f"Answer A:\n{a}\n\nAnswer B:\n{b}"


def cpu_name() -> str:
    """The CPU's model name, plus whether it computes bf16 natively (the dtype `auto` picks)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{name} ({', '.join(native)})" if native else name


def summarise(outcomes: np.ndarray, domains: list[str], baseline: np.ndarray | None) -> dict:
    acc = float(outcomes.mean())
    lo, hi = bootstrap_interval(outcomes)
    out = {"accuracy": acc, "ci95": [lo, hi], "n": len(outcomes)}
    out["per_domain"] = {
        d: float(outcomes[[x == d for x in domains]].mean()) for d in DOMAINS if d in domains
    }
    if baseline is not None:
        diff = outcomes - baseline
        dlo, dhi = bootstrap_interval(diff)
        out["vs_default"] = [float(diff.mean()), dlo, dhi]
    return out


def fmt(s: dict) -> str:
    lo, hi = s["ci95"]
    text = f"{s['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"
    text += "  " + " ".join(f"{d[:5]} {v:.2f}" for d, v in s["per_domain"].items())
    if "vs_default" in s:
        d, dlo, dhi = s["vs_default"]
        text += f"  vs default {d:+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--judge", action="append", help="judge model (repeatable); default: the zoo's causal LMs"
    )
    ap.add_argument(
        "--templates",
        default=",".join([*TEMPLATES, "pairwise"]),
        help=f"comma-separated, from {', '.join([*TEMPLATES, 'pairwise'])}",
    )
    ap.add_argument("--template-file", help="measure this judging prompt (with {prompt} and {response}) too")
    ap.add_argument("--domains", default=",".join(DOMAINS))
    ap.add_argument("--limit", type=int, help="first N triples of each domain (a quick look)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument(
        "--write", action="store_true", help=f"record pointwise figures in persyn/data/{ACCURACY_FILE}"
    )
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()
    transformers_logging.disable_progress_bar()  # one line per judge and template, not per weight

    wanted = args.domains.split(",")
    triples = [t for t in load_triples() if t.domain in wanted]
    if args.limit:
        triples = [t for d in wanted for t in [x for x in triples if x.domain == d][: args.limit]]
    templates = {k: v for k, v in TEMPLATES.items() if k in args.templates.split(",")}
    if args.template_file:
        templates[Path(args.template_file).stem] = Path(args.template_file).read_text()
    pairwise = "pairwise" in args.templates.split(",")
    judges = args.judge or list(ZOO_JUDGES)
    domains = [t.domain for t in triples]
    prompts = [t.prompt for t in triples]
    n = len(triples)
    print(
        f"{n} triples ({', '.join(f'{d} {domains.count(d)}' for d in DOMAINS if d in domains)}); "
        f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    results: dict[str, dict] = {}
    for model in judges:
        baseline = None
        # "default" first: the others are compared with it, triple by triple.
        order = sorted(templates, key=lambda k: k != "default")
        for name in order:
            if name != "default" and templates[name] == templates.get("default"):
                continue  # the same text as the default: the same figures
            spec = EngineSpec(model=model, judge_template=templates[name], dtype=args.dtype)
            t0 = time.perf_counter()
            engine = load_engine(spec)
            try:
                scores = np.asarray(
                    engine.score(prompts + prompts, [t.good for t in triples] + [t.bad for t in triples])
                )
            finally:
                engine.close()
            outcomes = pair_outcomes(scores[:n], scores[n:])
            s = summarise(outcomes, domains, baseline if name != "default" else None)
            if name == "default":
                baseline = outcomes
            s.update(
                model=model,
                template=name,
                judge_id=judge_id(spec),
                seconds=round(time.perf_counter() - t0, 1),
                mean_margin=float(np.nanmean(scores[:n] - scores[n:])),
                outcomes=outcomes.tolist(),
            )
            results[f"{model} | {name}"] = s
            print(f"{model:36s} {name:10s} {fmt(s)}  ({s['seconds']:.0f} s)", flush=True)
        if pairwise:
            spec = EngineSpec(model=model, judge_template=PAIRWISE, dtype=args.dtype)
            t0 = time.perf_counter()
            engine = load_engine(spec)
            try:
                both = [_pair(t.good, t.bad) for t in triples] + [_pair(t.bad, t.good) for t in triples]
                scores = np.asarray(engine.score(prompts + prompts, both))
            finally:
                engine.close()
            good_first, bad_first = scores[:n], scores[n:]
            outcomes = pair_outcomes(good_first, bad_first)
            s = summarise(outcomes, domains, baseline)
            s.update(
                model=model,
                template="pairwise",
                outcomes=outcomes.tolist(),
                seconds=round(time.perf_counter() - t0, 1),
                good_first_says_A=float(np.mean(good_first > 0)),
                bad_first_says_B=float(np.mean(bad_first < 0)),
            )
            results[f"{model} | pairwise"] = s
            print(
                f"{model:36s} {'pairwise':10s} {fmt(s)}  ({s['seconds']:.0f} s; one order only: good as A "
                f"{s['good_first_says_A']:.2f}, good as B {s['bad_first_says_B']:.2f})",
                flush=True,
            )

    if len(judges) > 1:
        # Per triple, the judges' mean outcome; resampling triples keeps each triple's judges together.
        names = list(dict.fromkeys(s["template"] for s in results.values()))
        pooled = {
            name: np.mean([results[f"{m} | {name}"]["outcomes"] for m in judges], axis=0)
            for name in names
            if all(f"{m} | {name}" in results for m in judges)
        }
        for name, per_triple in pooled.items():
            s = summarise(per_triple, domains, pooled.get("default") if name != "default" else None)
            results[f"all judges | {name}"] = s
            print(f"{'all judges (mean per triple)':36s} {name:10s} {fmt(s)}", flush=True)

    meta = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": dt.date.today().isoformat(),
        "n_triples": n,
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    if args.write:
        path = Path(str(resources.files("persyn").joinpath("data", ACCURACY_FILE)))
        doc = json.loads(path.read_text()) if path.is_file() else {"judges": {}}
        for s in results.values():
            if "judge_id" not in s or s["n"] != len(load_triples()):
                continue  # only whole-set pointwise figures describe a judge the pipeline can run
            doc["judges"][s["judge_id"]] = {
                "model": s["model"],
                "template": s["template"],
                "accuracy": round(s["accuracy"], 4),
                "ci95": [round(x, 4) for x in s["ci95"]],
                "n": s["n"],
                "per_domain": {k: round(v, 4) for k, v in s["per_domain"].items()},
                **meta,
                "dtype": args.dtype,
            }
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
