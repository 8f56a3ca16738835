"""Rendering and token accounting shared by every engine (transformers in-process, vLLM, and the
OpenAI-compatible HTTP engine, which renders client-side), so that learnability and judge scores
mean the same thing whichever back end computed them:

* prompt ids: the rendered prompt (chat template with the generation prompt, tokenised without
  extra special tokens; or the completion template, tokenised with them);
* response ids: ``tokenizer(response, add_special_tokens=False)``; only these are scored, with no
  end-of-turn token;
* judge: the judging prompt rendered like any prompt; score = logsumexp over the single-token
  spellings of Yes minus the same for No, at the next position.

Only the tokenizer (and config.json, to tell a reward model from a causal LM) is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from persyn.engines.base import DEFAULT_JUDGE_TEMPLATE, EngineError, check_pairs
from persyn.engines.spec import EngineSpec, model_identity
from persyn.store.keys import digest

# End-of-turn tokens of common chat formats; generation stops on any that the vocabulary has.
END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
YES = ("Yes", "yes", "YES")
NO = ("No", "no", "NO")


def row_seed(seed: int, prompt: str) -> int:
    """The sampling seed of one prompt (as the transformers engine derives it): the same (seed,
    prompt) gives the same text in any batch, and different prompts draw independent streams."""
    return int.from_bytes(bytes.fromhex(digest(f"{seed}\x1f{prompt}")), "little") & (2**63 - 1)


def fingerprint(
    engine: str,
    spec: EngineSpec,
    *,
    kind: str,
    mode: str,
    chat_template: Any,
    label: str | None = None,
    **extra: Any,
) -> str:
    """The engine fingerprint, built alike by every back end: `<engine>:<model>:<digest>` over what
    changes the model's outputs: the model (`model_identity`), its kind, its prompt format (template
    mode, completion or chat template, system prompt) and what the back end adds in `extra` (dtype,
    judge template, server). `label` replaces the model in the readable part."""
    ident = model_identity(spec.model)
    blob = {
        "engine": engine,
        "model": ident,
        "kind": kind,
        "template": mode,
        "completion_template": spec.completion_template if mode == "completion" else None,
        "chat_template": digest(chat_template) if mode == "chat" and isinstance(chat_template, str) else None,
        "system_prompt": spec.system_prompt,
        **extra,
    }
    return f"{engine}:{label or ident}:{digest(blob, spaced=True)}"


def check_template(template: str, fields: tuple[str, ...], name: str) -> None:
    try:
        template.format(**{f: "" for f in fields})
    except (KeyError, IndexError, ValueError) as exc:
        raise EngineError(
            f"{name} {template!r} must use only {', '.join('{' + f + '}' for f in fields)} "
            f"(double any literal braces): {exc!r}"
        ) from exc
    missing = [f for f in fields if "{" + f + "}" not in template]
    if missing:
        raise EngineError(f"{name} {template!r} lacks {', '.join('{' + f + '}' for f in missing)}")


def model_kind(path: str) -> str:
    """ "reward" for a sequence-classification checkpoint, else "causal" (also when unknown)."""
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return "causal"
    with open(cfg, encoding="utf-8") as fh:
        archs = json.load(fh).get("architectures") or []
    return "reward" if any(a.endswith("ForSequenceClassification") for a in archs) else "causal"


def template_mode(spec: EngineSpec, has_chat_template: bool) -> str:
    if spec.template == "chat" and not has_chat_template:
        raise EngineError(
            f"{spec.model}: template 'chat' asked for, but its tokenizer has no chat template; "
            "use template: completion (with completion_template) or auto"
        )
    return "chat" if has_chat_template and spec.template in ("auto", "chat") else "completion"


class Renderer:
    """A model's prompt format and token accounting, from its tokenizer alone."""

    def __init__(self, spec: EngineSpec, tokenizer: Any):
        self.spec = spec
        self.tokenizer = tokenizer
        self.mode = template_mode(spec, bool(getattr(tokenizer, "chat_template", None)))
        check_template(spec.completion_template, ("prompt",), "completion_template")
        self.judge_template = spec.judge_template or DEFAULT_JUDGE_TEMPLATE
        check_template(self.judge_template, ("prompt", "response"), "judge_template")
        self.yes_ids = self._single_token_ids(YES)
        self.no_ids = self._single_token_ids(NO)

    @classmethod
    def from_path(cls, spec: EngineSpec, path: str, local_only: bool = False) -> Renderer:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(
                path, trust_remote_code=spec.trust_remote_code, local_files_only=local_only
            )
        except Exception as exc:  # OSError offline, ValueError for unknown classes...
            raise EngineError(f"cannot load the tokenizer of {spec.model!r} from {path!r}: {exc}") from exc
        return cls(spec, tok)

    def messages(self, prompt: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.spec.system_prompt}] if self.spec.system_prompt else []
        return [*system, {"role": "user", "content": prompt}]

    def render(self, prompt: str) -> str:
        if self.mode == "chat":
            return self.tokenizer.apply_chat_template(
                self.messages(prompt), tokenize=False, add_generation_prompt=True
            )
        return self.spec.completion_template.format(prompt=prompt)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(self.render(prompt), add_special_tokens=self.mode == "completion").input_ids

    def response_ids(self, response: str) -> list[int]:
        return self.tokenizer(response, add_special_tokens=False).input_ids

    def loglik_pair(self, i: int, prompt: str, response: str) -> tuple[list[int], list[int]]:
        p_ids, r_ids = self.prompt_ids(prompt), self.response_ids(response)
        if not r_ids:
            raise EngineError(f"loglik: response {i} is empty; a mean over zero tokens is undefined")
        if not p_ids:
            raise EngineError(f"loglik: prompt {i} renders to zero tokens; nothing to condition on")
        return p_ids, r_ids

    def loglik_pairs(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) of each pair, as every engine scores them."""
        check_pairs(prompts, responses)
        return [self.loglik_pair(i, p, r) for i, (p, r) in enumerate(zip(prompts, responses, strict=True))]

    def judge_ids(self, prompt: str, response: str) -> list[int]:
        return self.prompt_ids(self.judge_template.format(prompt=prompt, response=response))

    def reward_ids(self, prompt: str, response: str) -> list[int]:
        """A (prompt, response) conversation as a reward model reads it (as the transformers engine)."""
        if self.mode == "chat":
            conv = [*self.messages(prompt), {"role": "assistant", "content": response}]
            text = self.tokenizer.apply_chat_template(conv, tokenize=False)
            return self.tokenizer(text, add_special_tokens=False).input_ids
        return self.tokenizer(self.render(prompt) + response).input_ids

    def stop_token_ids(self, extra: Sequence[int] = ()) -> list[int]:
        ids = {i for i in extra if i is not None}
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        if self.mode == "chat":
            vocab = self.tokenizer.get_vocab()
            ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
        return sorted(ids)

    def _single_token_ids(self, words: Sequence[str]) -> list[int]:
        ids = set()
        for word in words:
            for variant in (word, " " + word):
                enc = self.tokenizer(variant, add_special_tokens=False).input_ids
                if len(enc) == 1:
                    ids.add(enc[0])
        return sorted(ids)
