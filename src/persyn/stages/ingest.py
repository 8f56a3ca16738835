"""Prompt ingestion, before every stage: load the prompt file, store it, check context lengths.

- `load_prompt_set(config)` reads the file with `persyn.prompts.load_prompts`: malformed rows are
  refused with file:line:reason (or, with `skip_bad_rows`, skipped), exact duplicates merged. This
  runs *before* the run directory is opened, so a refused file leaves nothing behind.
- `ingest(ctx, prompt_set)` stores the prompts, checks that each fits the student's and every
  teacher's context (prompt rendered in the model's own template, counted with its tokenizer,
  leaving room for `max_new_tokens`), records the working set (subset "prompts": the prompts that
  fit, in file order) and writes what happened into `<run>/prompts/`:
  `load_report.json` (counts, bad rows, duplicates, too-long prompts), and when non-empty
  `bad_rows.jsonl`, `duplicates.jsonl`, `too_long.jsonl`.

Tokenizers come from the model's local files (a zoo alias or a folder; only the tokenizer and the
config are read, not the weights). A model without local files (a hub id behind an HTTP server) is
not checked; the report says so, and its engine refuses an overflowing prompt at generation time
(that row is recorded as failed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from persyn.config import Config
from persyn.engines.spec import EngineSpec, local_model_path
from persyn.prompts import LengthCheck, Prompt, PromptSet, TokenLimit, check_lengths, load_prompts
from persyn.stages.context import PROMPTS_DIR, RunContext, StageError
from persyn.store.keys import content_key, digest


def load_prompt_set(config: Config, *, skip_bad_rows: bool | None = None) -> PromptSet:
    p = config.prompts
    return load_prompts(
        p.path,
        format=p.format,
        prompt_field=p.prompt_field,
        answer_field=p.answer_field,
        id_field=p.id_field,
        skip_bad_rows=p.skip_bad_rows if skip_bad_rows is None else skip_bad_rows,
        limit=p.limit,
    )


@dataclass
class Ingested:
    prompt_set: PromptSet
    ids: list[str]
    length: dict[str, Any]
    unchecked: list[str] = field(default_factory=list)

    @property
    def n_excluded(self) -> int:
        return int(self.length.get("excluded", 0))

    def summary(self) -> str:
        s = self.prompt_set.report.summary()
        if self.n_excluded:
            s += f"; {self.n_excluded} over a model's context left out"
        return s


# ------------------------------------------------------------------------------------------------
# token counting from local tokenizer files


_COUNTERS: dict[str, tuple[Callable[[Sequence[str]], list[int]], int]] = {}


def token_counter(spec: EngineSpec) -> tuple[Callable[[Sequence[str]], list[int]], int] | None:
    """(count prompt tokens as the model sees them, context length), or None without local files.
    Memoised per spec: a tokenizer loads once per process."""
    key = spec.model_dump_json()
    if key in _COUNTERS:
        return _COUNTERS[key]
    path = local_model_path(spec.model)
    if path is None:
        return None
    from transformers import AutoConfig

    from persyn.engines.rendering import Renderer

    renderer = Renderer.from_path(spec, path)
    ctx = spec.max_model_len
    if ctx is None:
        cfg = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(text_cfg, name, None)
            if isinstance(v, int) and v > 0:
                ctx = v
                break
    if ctx is None:
        ml = getattr(renderer.tokenizer, "model_max_length", None)
        ctx = ml if isinstance(ml, int) and 0 < ml < 10**7 else None
    if ctx is None:
        return None
    tok = renderer.tokenizer
    special = renderer.mode == "completion"
    # Models that render and tokenise alike (one family's sizes share a tokenizer and template)
    # share one memo of counts: rendering costs ~0.1 ms a prompt, minutes at 1M prompts x teachers.
    memo = _MEMOS.setdefault(_rendering_identity(renderer), {})

    def count(texts: Sequence[str]) -> list[int]:
        todo = [t for t in dict.fromkeys(texts) if t not in memo]
        if todo:
            rendered = [renderer.render(t) for t in todo]
            for t, ids in zip(todo, tok(rendered, add_special_tokens=special).input_ids, strict=True):
                memo[t] = len(ids)
        return [memo[t] for t in texts]

    _COUNTERS[key] = (count, int(ctx))
    return _COUNTERS[key]


_MEMOS: dict[str, dict[str, int]] = {}


def _rendering_identity(renderer) -> str:
    """A digest of everything that decides a prompt's token count: the tokenizer itself (its
    serialised vocabulary and rules), the template mode, chat template, system prompt and
    completion template."""
    tok = renderer.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    spec = renderer.spec
    parts = [
        type(tok).__name__,
        vocab,
        renderer.mode,
        getattr(tok, "chat_template", None) if renderer.mode == "chat" else spec.completion_template,
        spec.system_prompt,
    ]
    return digest(parts, None, spaced=True)


def _limits(config: Config) -> tuple[list[tuple[str, EngineSpec, int]], int]:
    """(role name, spec, tokens reserved for the response) for each model that reads prompts."""
    reserve = {t.name: config.generation_for(t.name).max_new_tokens for t in config.teachers}
    out = [(f"teacher {t.name}", t.engine_spec(), reserve[t.name]) for t in config.teachers]
    # The student reads every teacher's response after the prompt (learnability).
    out.append(("student", config.student.engine_spec(), max(reserve.values())))
    return out, max(reserve.values())


# ------------------------------------------------------------------------------------------------


def length_check_key(config: Config, prompts: Sequence[Prompt]) -> str:
    """What a length check depends on: the prompt ids and each model's spec and reserve."""
    limits, _ = _limits(config)
    identity = [(name, spec.model_dump(mode="json"), r) for name, spec, r in limits]
    return content_key("length-check", digest([p.id for p in prompts], spaced=True), identity)


def length_check(config: Config, prompts: Sequence[Prompt]) -> dict[str, Any]:
    """Which prompts fit every model's context, as that model renders and counts them (leaving
    room for the response): `LengthCheck.to_dict()` plus `unchecked` (models without local
    files) and `limits`. Ingest keeps the result in the run's state; `persyn plan` reports it."""
    limits, _ = _limits(config)
    token_limits, unchecked = [], []
    seen: dict[str, TokenLimit] = {}
    for name, spec, reserve in limits:
        counter = token_counter(spec)
        if counter is None:
            unchecked.append(name)
            continue
        count, context = counter
        tl = TokenLimit(name, count, context - reserve)
        # Two roles on one model with the same reserve need one pass, not two.
        ident = f"{spec.model_dump_json()}|{reserve}"
        if ident not in seen:
            seen[ident] = tl
            token_limits.append(tl)
    check = check_lengths(prompts, token_limits) if token_limits else LengthCheck(list(prompts), [])
    return {
        **check.to_dict(),
        "unchecked": unchecked,
        "limits": [{"name": t.name, "max_prompt_tokens": t.max_tokens} for t in token_limits],
    }


def ingest(ctx: RunContext, prompt_set: PromptSet) -> Ingested:
    store = ctx.store
    store.put_prompts(prompt_set.prompts)
    all_ids = [p.id for p in prompt_set.prompts]
    key = length_check_key(ctx.config, prompt_set.prompts)
    cached = store.get_state("length_check")
    if cached and cached.get("key") == key:
        length = cached["result"]
    else:
        length = length_check(ctx.config, prompt_set.prompts)
        store.set_state("length_check", {"key": key, "result": length})
    excluded = {t["id"] for t in length["too_long"]}
    ids = [i for i in all_ids if i not in excluded]
    if not ids:
        raise StageError(
            f"every prompt of {prompt_set.report.path} is over some model's context window "
            f"(see {store.path(PROMPTS_DIR, 'too_long.jsonl')})"
        )
    ctx.set_working_ids(ids)
    ing = Ingested(prompt_set, ids, length, length.get("unchecked", []))
    _write_reports(ctx, prompt_set, length)
    rep = prompt_set.report
    store.log_event(
        "prompts",
        "info",
        ing.summary(),
        prompts=len(ids),
        bad_rows=rep.n_bad,
        duplicate_rows=rep.n_duplicate_rows,
        too_long=ing.n_excluded,
    )
    return ing


def _write_reports(ctx: RunContext, prompt_set: PromptSet, length: dict[str, Any]) -> None:
    rep = prompt_set.report
    ctx.write_artifact(f"{PROMPTS_DIR}/load_report.json", {**rep.to_dict(), "length_check": length})
    for name, rows in (
        ("bad_rows.jsonl", [{"file": rep.path, **b.to_dict()} for b in rep.bad_rows]),
        ("duplicates.jsonl", [{"file": rep.path, **g.to_dict()} for g in rep.duplicates]),
        ("too_long.jsonl", length["too_long"]),
    ):
        # An empty list removes the file: a stale list from an earlier version of the file would mislead.
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        ctx.write_artifact(f"{PROMPTS_DIR}/{name}", text or None)
