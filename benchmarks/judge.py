"""How often does an LM judge prefer the good answer? Pairwise accuracy on two labelled sets, lever by lever.

The sets: `persyn/data/judge_triples.jsonl` (120 hand-written (prompt, good, bad) triples, 30 each of
math, facts, code and instructions; the judge's template was chosen on it) and
`judge_triples_fresh.jsonl` (80 triples written for issue 19 and not used to choose anything; its
math and facts items carry a short reference answer). A judge is right on a triple when it scores
the good answer above the bad one (ties count half). Levers, measured side by side:

- `default`: the shipped pointwise judge (engines/base.py: log P(Yes) - log P(No) of one response);
- `rubric`: a pointwise prompt that lists what to check (facts and numbers, completeness, every
  format instruction, code that runs);
- `reference`: the default prompt with the reference answer shown under the question
  (`persyn.scoring.quality.with_reference`), where the triple has one (others are judged as
  `default`: what a pipeline with references for some prompts gets);
- `pairwise`: both answers in one prompt, "is A better than B?", asked in both orders; the
  continuous debiased score is (A=good, B=bad) log-odds minus (A=bad, B=good) log-odds, so the
  judge's positional bias cancels; `good first says A` / `good second says B` are the single-order
  thresholded verdicts, which show that bias;
- `ensemble`: per triple, the sum of the levers' margins (good minus bad) each divided by the
  spread of that lever's scores over the set (a label-free scale), over default, rubric,
  reference and pairwise.

Every score is cached under $PERSYN_CACHE/bench/judge/ by (model, exact judging text), so a rerun or
a new lever computes only what is new. Intervals: 95% bootstrap over triples.

    .venv/bin/python benchmarks/judge.py                          # the demo judge, both sets, all levers
    .venv/bin/python benchmarks/judge.py --judge zoo:qwen2.5-coder-1.5b-instruct --limit 10
    .venv/bin/python benchmarks/judge.py --levers default,rubric --sets first
    .venv/bin/python benchmarks/judge.py --write   # record the pointwise levers' figures on the first
                                                   # set in persyn/data/judge_accuracy.json (the report)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
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
from persyn.engines.base import DEFAULT_JUDGE_TEMPLATE, RUBRIC_JUDGE_TEMPLATE  # noqa: E402
from persyn.engines.spec import EngineSpec  # noqa: E402
from persyn.scoring.quality import with_reference  # noqa: E402
from persyn.scoring.reliability import ACCURACY_FILE, judge_id  # noqa: E402
from persyn.zoo import cache_dir  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the labelled sets' reader
from judge_set import (  # noqa: E402
    DOMAINS,
    FRESH_TRIPLES_FILE,
    TRIPLES_FILE,
    bootstrap_interval,
    load_triples,
    pair_outcomes,
)

DEMO_JUDGE = "zoo:qwen2.5-coder-0.5b-instruct"
SETS = {"first": TRIPLES_FILE, "fresh": FRESH_TRIPLES_FILE}
POINTWISE = {"default": DEFAULT_JUDGE_TEMPLATE, "rubric": RUBRIC_JUDGE_TEMPLATE}
PAIRWISE = (
    "Two answers to the same request follow.\n\n"
    "Request:\n{prompt}\n\n"
    "Answer A:\n{a}\n\n"
    "Answer B:\n{b}\n\n"
    "Is Answer A better than Answer B (more correct, and following the request more closely)? "
    "Reply with Yes or No only."
)
LEVERS = ("default", "rubric", "reference", "pairwise", "ensemble")
# The judging text goes to the engine whole, as its "prompt": one loaded engine serves every lever.
PASS_THROUGH = "{prompt}{response}"


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


class ScoreCache:
    """log P(Yes) - log P(No) per (model, dtype, judging text), in one JSON file per model."""

    def __init__(self, model: str, dtype: str):
        slug = hashlib.sha256(f"{model}|{dtype}".encode()).hexdigest()[:16]
        self.path = cache_dir() / "bench" / "judge" / f"{slug}.json"
        self.data: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def missing(self, texts: list[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if self.key(t) not in self.data))

    def put(self, texts: list[str], scores: list[float]) -> None:
        self.data.update({self.key(t): float(s) for t, s in zip(texts, scores, strict=True)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)

    def get(self, texts: list[str]) -> np.ndarray:
        return np.array([self.data[self.key(t)] for t in texts])


def judging_texts(triples, lever: str) -> tuple[list[str], list[str]]:
    """(texts scoring the good answer, texts scoring the bad one); for `pairwise`, (good as A, bad as A)."""
    good, bad = [], []
    for t in triples:
        if lever == "pairwise":
            good.append(PAIRWISE.format(prompt=t.prompt, a=t.good, b=t.bad))
            bad.append(PAIRWISE.format(prompt=t.prompt, a=t.bad, b=t.good))
            continue
        tpl = POINTWISE["default" if lever == "reference" else lever]
        # The pipeline's reference-guided judge: the default template, the reference under the question.
        q = with_reference(t.prompt, t.reference) if lever == "reference" and t.reference else t.prompt
        fmt = lambda r, q=q, tpl=tpl: tpl.format(prompt=q, response=r)  # noqa: E731
        good.append(fmt(t.good))
        bad.append(fmt(t.bad))
    return good, bad


def summarise(margins: np.ndarray, domains: list[str], baseline: np.ndarray | None) -> dict:
    outcomes = pair_outcomes(margins, np.zeros_like(margins))
    lo, hi = bootstrap_interval(outcomes)
    out = {"accuracy": float(outcomes.mean()), "ci95": [lo, hi], "n": len(outcomes)}
    out["per_domain"] = {
        d: float(outcomes[[x == d for x in domains]].mean()) for d in DOMAINS if d in domains
    }
    if baseline is not None:
        diff = outcomes - baseline
        dlo, dhi = bootstrap_interval(diff)
        out["vs_default"] = [float(diff.mean()), dlo, dhi]
    out["outcomes"] = outcomes.tolist()
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
    ap.add_argument("--judge", action="append", help=f"judge model (repeatable); default {DEMO_JUDGE}")
    ap.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, from {', '.join(LEVERS)}")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated: first, fresh")
    ap.add_argument("--limit", type=int, help="first N triples of each domain of each set (a subset)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument(
        "--write", action="store_true", help=f"record pointwise figures in persyn/data/{ACCURACY_FILE}"
    )
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument(
        "--cached-only", action="store_true", help="load no model: figures from the scores cached so far"
    )
    args = ap.parse_args()
    transformers_logging.disable_progress_bar()

    levers = [x for x in args.levers.split(",") if x]
    if unknown := set(levers) - set(LEVERS):
        ap.error(f"unknown lever(s) {', '.join(sorted(unknown))}")
    measured = [x for x in levers if x != "ensemble"]
    if "ensemble" in levers:
        measured = list(dict.fromkeys([*measured, "default", "rubric", "reference", "pairwise"]))
    sets = {}
    for name in args.sets.split(","):
        triples = load_triples(SETS[name])
        if args.limit:
            triples = [t for d in DOMAINS for t in [x for x in triples if x.domain == d][: args.limit]]
        sets[name] = triples
    judges = args.judge or [DEMO_JUDGE]
    print(
        f"sets: {', '.join(f'{k} {len(v)}' for k, v in sets.items())}; CPU: {cpu_name()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; command: {' '.join(sys.argv)}",
        flush=True,
    )

    results: dict[str, dict] = {}
    for model in judges:
        cache = ScoreCache(model, args.dtype)
        texts = {(s, lv): judging_texts(tr, lv) for s, tr in sets.items() for lv in measured}
        # Triple by triple, round-robin over sets and domains, every lever of a triple together: a
        # run stopped early (the cache keeps each chunk) leaves whole triples spread evenly.
        per_triple = {
            (s, i): [x for lv in measured for x in (texts[(s, lv)][0][i], texts[(s, lv)][1][i])]
            for s, tr in sets.items()
            for i in range(len(tr))
        }
        order = sorted(
            per_triple,
            key=lambda si: (
                [x for x in sets[si[0]] if x.domain == sets[si[0]][si[1]].domain].index(sets[si[0]][si[1]]),
                DOMAINS.index(sets[si[0]][si[1]].domain),
                list(sets).index(si[0]),
            ),
        )
        todo = [] if args.cached_only else cache.missing([x for si in order for x in per_triple[si]])
        seconds = 0.0
        if todo:
            spec = EngineSpec(model=model, judge_template=PASS_THROUGH, dtype=args.dtype)
            t0 = time.perf_counter()
            engine = load_engine(spec)
            try:
                step = 8  # cache as it goes: an interrupted run keeps what it scored
                for i in range(0, len(todo), step):
                    chunk = todo[i : i + step]
                    cache.put(chunk, engine.score(chunk, [""] * len(chunk)))
                    print(f"  {model}: scored {min(i + step, len(todo))}/{len(todo)}", flush=True)
            finally:
                engine.close()
            seconds = time.perf_counter() - t0
        print(f"{model}: {len(todo)} judging texts scored in {seconds:.0f} s (the rest cached)", flush=True)
        for set_name, all_triples in sets.items():
            # Only triples whose every judging text is scored (all of them, unless a run was cut short).
            done = [i for i in range(len(all_triples)) if not cache.missing(per_triple[(set_name, i)])]
            if len(done) < len(all_triples):
                print(
                    f"{set_name}: {len(done)} of {len(all_triples)} triples scored under every lever",
                    flush=True,
                )
            if not done:
                continue
            triples = [all_triples[i] for i in done]
            texts.update({(set_name, lv): judging_texts(triples, lv) for lv in measured})
            domains = [t.domain for t in triples]
            margins: dict[str, np.ndarray] = {}
            extra: dict[str, dict] = {}
            for lv in measured:
                g, b = texts[(set_name, lv)]
                sg, sb = cache.get(g), cache.get(b)
                margins[lv] = sg - sb
                # Label-free scale for the ensemble: the spread of every score this lever gave.
                extra[lv] = {"scale": float(np.std(np.concatenate([sg, sb]))) or 1.0}
                if lv == "pairwise":
                    extra[lv]["good_first_says_A"] = float(np.mean(sg > 0))
                    extra[lv]["good_second_says_B"] = float(np.mean(sb < 0))
                    extra[lv]["says_A_either_way"] = float(np.mean((sg > 0) & (sb > 0)))
            if "ensemble" in levers:
                parts = ["default", "rubric", "reference", "pairwise"]
                margins["ensemble"] = sum(margins[p] / extra[p]["scale"] for p in parts)
            base = pair_outcomes(margins["default"], 0 * margins["default"]) if "default" in margins else None
            for lv in [x for x in levers if x in margins]:
                s = summarise(margins[lv], domains, None if lv == "default" else base)
                s.update(model=model, set=set_name, lever=lv, **{k: v for k, v in extra.get(lv, {}).items()})
                if lv in POINTWISE and set_name == "first":
                    s["judge_id"] = judge_id(EngineSpec(model=model, judge_template=POINTWISE[lv]))
                results[f"{model} | {set_name} | {lv}"] = s
                line = f"{model:34s} {set_name:5s} {lv:9s} {fmt(s)}"
                if lv == "pairwise":
                    line += (
                        f"  (one order only: good as A says A {s['good_first_says_A']:.2f}, good as B says "
                        f"B {s['good_second_says_B']:.2f}; A in both orders {s['says_A_either_way']:.2f})"
                    )
                print(line, flush=True)

    meta = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": dt.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "sets": {k: len(v) for k, v in sets.items()},
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
                "template": s["lever"],
                "accuracy": round(s["accuracy"], 4),
                "ci95": [round(x, 4) for x in s["ci95"]],
                "n": s["n"],
                "per_domain": {k: round(v, 4) for k, v in s["per_domain"].items()},
                **{k: v for k, v in meta.items() if k not in ("command", "sets")},
                "n_triples": s["n"],
                "dtype": args.dtype,
            }
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
