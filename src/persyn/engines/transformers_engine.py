"""The transformers engine: a local model on CPU or GPU behind the three engine verbs.

Design notes (details in docs/engines.md):

* Rendering: the tokenizer's chat template (with the spec's system prompt) when the template mode
  is auto/chat and the tokenizer has one, else ``completion_template.format(prompt=...)``.
  Chat text is tokenised without extra special tokens (the template writes them); completion text
  with them (so base models such as Gemma get their ``<bos>``).
* ``loglik``: prompt ids = the rendered prompt with the generation prompt; response ids =
  ``tokenizer(response, add_special_tokens=False)``; scored = the response ids only, each given
  everything before it; no end-of-turn token. Mean of their log-probabilities (docs/method.md, Eq. 1).
  The LM head runs only at response positions, in chunks (``logprobs.py``).
* ``generate``: left-padded batches decoded greedily; sampling adds per-row Gumbel noise seeded
  by (seed, prompt) to the temperature/top-p warped logits, so that a (seed, prompt) pair gives
  the same text in any batch (Gumbel-max draws an exact sample). Finished rows leave the batch
  (``decoding.py``) instead of riding along as padding until the longest answer ends.
* ``score``: a one-output sequence-classification reward model's scalar on the rendered
  (prompt, response) conversation, or for a causal LM the judge's log P(Yes) - log P(No).
* Inputs over the context window raise ContextLengthError (no silent truncation).
* A memory error halves the batch size and retries the batch; the smaller size is kept.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from persyn.engines.attention import keep_freed_memory
from persyn.engines.attention import register as register_exact_attention
from persyn.engines.base import EngineError, Generation, GenerationParams, LocalChecks, check_pairs
from persyn.engines.decoding import decode
from persyn.engines.linear import use_row_blocks
from persyn.engines.logprobs import (
    DEFAULT_CHUNK_BYTES,
    chunked_token_logprobs,
    rows_per_chunk,
    softcap_logits,
    target_logits,
)
from persyn.engines.rendering import Renderer, fingerprint, row_seed
from persyn.engines.spec import EngineSpec, resolve_model
from persyn.util.hardware import dtype_name, dtype_reason, resolve_device, resolve_dtype

log = logging.getLogger(__name__)
T = TypeVar("T")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in msg or "out of memory" in msg)


class SeededGumbelNoise(LogitsProcessor):
    """Adds Gumbel(0, 1) noise to each row's (already warped) scores from that row's own generator.

    With greedy decoding afterwards, ``argmax(scores + G)`` is an exact sample from
    ``softmax(scores)``. Each row draws exactly one vocabulary-sized block per step, so step t of a
    row sees the same noise whatever the other rows in the batch are.
    """

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float32) for g in self.generators])
        tiny = torch.finfo(torch.float32).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp_(min=tiny, max=1.0 - 1e-7)))
        return scores + gumbel.to(scores.device)

    def select_rows(self, rows: Sequence[int]) -> None:
        """Rows left the batch (decoding.py): keep the generators of those that stay."""
        self.generators = [self.generators[i] for i in rows]


class TransformersEngine(LocalChecks):
    """A transformers model behind the engine protocol (see module docstring)."""

    def __init__(self, spec: EngineSpec, batch_invariant: bool | None = None):
        """``batch_invariant`` (default: on for CPU, off for GPU): run attention row by row on each
        row's own tokens, linear layers in row blocks of a fixed size (CPU only: linear.py) and
        decode lone rows as twin pairs, so that a row's results do not depend on the rows batched
        with it (see attention.py); costs a few percent of generation
        throughput on CPU (docs/engines.md). None: the spec's
        ``batch_invariant``, whose own default is on for CPU and off for GPU."""
        self.spec = spec
        self.path = resolve_model(spec.model)
        self.device = resolve_device(spec.device)
        trust = spec.trust_remote_code
        config = AutoConfig.from_pretrained(self.path, trust_remote_code=trust)
        archs = getattr(config, "architectures", None) or []
        self.kind = "reward" if any(a.endswith("ForSequenceClassification") for a in archs) else "causal"
        if self.kind == "reward" and getattr(config, "num_labels", 1) != 1:
            raise EngineError(
                f"{spec.model}: a reward model must have one output; this one has {config.num_labels} "
                f"labels ({archs[0]})"
            )
        # `auto`: bf16 only on CPUs that compute it natively, else float32; the checkpoint's own
        # dtype on GPU (persyn.util.hardware, the one rule for every model persyn loads).
        dtype: Any = resolve_dtype(spec.dtype, self.device) or "auto"
        self.dtype_reason = dtype_reason(spec.dtype, self.device)
        cls = AutoModelForSequenceClassification if self.kind == "reward" else AutoModelForCausalLM
        if batch_invariant is None:
            batch_invariant = spec.batch_invariant
        if batch_invariant is None:  # on GPU the model's default kernels are kept for speed and memory
            batch_invariant = self.device.type == "cpu"
        self.batch_invariant = batch_invariant
        if self.device.type == "cpu":
            keep_freed_memory()  # decoding on CPU re-allocates large blocks every step (attention.py)
        attn = register_exact_attention() if batch_invariant else None
        try:
            try:
                self.model = cls.from_pretrained(
                    self.path, dtype=dtype, trust_remote_code=trust, attn_implementation=attn
                )
            except ValueError as exc:  # a model class that accepts no custom attention
                if attn is None:
                    raise
                log.warning("%s: no batch-invariant attention, default kept (%s)", spec.model, exc)
                self.model = cls.from_pretrained(self.path, dtype=dtype, trust_remote_code=trust)
                self.batch_invariant = False
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust)
        except OSError as exc:
            raise EngineError(f"cannot load model {spec.model!r} (resolved to {self.path!r}): {exc}") from exc
        self.model.to(self.device).eval()
        self.dtype = self.model.dtype
        if self.batch_invariant and self.device.type == "cpu":
            # CPU GEMMs round a row differently by the number of rows (linear.py); on GPU the
            # model's own layers are kept, as its attention is.
            use_row_blocks(self.model)
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if self.pad_id is None:
            self.pad_id = 0  # padding positions are masked; any id will do

        # Prompt format and token accounting: the same code as the HTTP and vLLM engines, so a
        # score means the same thing on every back end.
        self.renderer = Renderer(spec, tok)
        self.template_mode = self.renderer.mode
        self.judge_template = self.renderer.judge_template

        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.max_len = spec.max_model_len or _context_length(text_config, tok)
        self.batch_size = spec.batch_size
        self.logit_chunk_bytes = DEFAULT_CHUNK_BYTES
        self.fingerprint = self._fingerprint()

        if self.kind == "causal":
            self._softcap = getattr(text_config, "final_logit_softcapping", None)
            eos = self.model.generation_config.eos_token_id
            self.stop_ids = set(self.renderer.stop_token_ids(eos if isinstance(eos, list) else [eos]))
            self._yes_ids, self._no_ids = self.renderer.yes_ids, self.renderer.no_ids
            self._exact_head = self._probe_head()

    # ---------------------------------------------------------------------------------------------
    # identity and rendering

    def _fingerprint(self) -> str:
        chat_template = getattr(self.tokenizer, "chat_template", None)
        return fingerprint(
            "transformers",
            self.spec,
            kind=self.kind,
            mode=self.template_mode,
            chat_template=chat_template,
            dtype=str(self.dtype).removeprefix("torch."),
            judge_template=self.judge_template if self.kind == "causal" else None,
        )

    def describe(self) -> dict[str, Any]:
        """How this model actually runs (recorded in the run's state and report)."""
        return {
            "engine": "transformers",
            "model": self.spec.model,
            "fingerprint": self.fingerprint,
            "dtype": dtype_name(self.dtype),
            "dtype_reason": self.dtype_reason,
            "device": str(self.device),
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }

    def render(self, prompt: str) -> str:
        """The prompt exactly as the model sees it, ready for the response to follow."""
        return self.renderer.render(prompt)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.renderer.prompt_ids(prompt)

    def response_ids(self, response: str) -> list[int]:
        return self.renderer.response_ids(response)

    # ---------------------------------------------------------------------------------------------
    # generate

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        self._need("causal", "generate")
        if params.max_new_tokens < 1:
            raise EngineError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
        ids = [self.prompt_ids(p) for p in prompts]
        self._check_prompts_fit(ids, params.max_new_tokens)
        order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
        return self._batched(
            order, lambda idx: self._generate_batch([ids[i] for i in idx], [prompts[i] for i in idx], params)
        )

    def _processors(self, prompts: Sequence[str], params: GenerationParams) -> LogitsProcessorList:
        if params.greedy:
            return LogitsProcessorList()
        procs: list[LogitsProcessor] = [TemperatureLogitsWarper(params.temperature)]
        if params.top_p < 1.0:
            procs.append(TopPLogitsWarper(params.top_p))
        procs.append(SeededGumbelNoise([row_seed(params.seed, p) for p in prompts]))
        return LogitsProcessorList(procs)

    @torch.inference_mode()
    def _generate_batch(
        self, ids: list[list[int]], prompts: list[str], params: GenerationParams
    ) -> list[Generation]:
        n = len(ids)
        if n == 1 and self.batch_invariant:
            # A lone row would decode through matrix-vector kernels, which round differently from
            # the matrix-matrix ones used for every batch; a twin row keeps it on the batch path.
            ids, prompts = ids * 2, prompts * 2
        # At least two positions: a prefill of one position per row would look like a decoding step
        # to the row-blocked linear layers (linear.py) and round unlike the same prompt in a batch.
        width = 2 if self.batch_invariant else 1
        input_ids, mask = _pad(ids, self.pad_id, left=True, device=self.device, min_width=width)
        new = decode(
            self.model,
            input_ids,
            mask,
            max_new_tokens=params.max_new_tokens,
            stop_ids=self.stop_ids,
            processors=self._processors(prompts, params),
            stopped=self._stop_string_check(params),
            min_rows=2 if self.batch_invariant else 1,
        )[:n]
        return [self._finish(row, len(x), params) for row, x in zip(new, ids[:n], strict=True)]

    def _stop_string_check(self, params: GenerationParams) -> Callable[[list[int]], bool] | None:
        """Whether a row's tokens so far hold one of the stop strings; None without stop strings."""
        stops = [s for s in params.stop if s]
        if not stops:
            return None
        decode_text = self.tokenizer.decode
        return lambda row: _first_stop(decode_text(row, skip_special_tokens=True), stops) is not None

    def _finish(self, tokens: list[int], n_prompt: int, params: GenerationParams) -> Generation:
        """Turn a row of generated ids (possibly padded after it finished) into a Generation."""
        end = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
        finish = "stop" if end is not None else "length"
        count = end + 1 if end is not None else len(tokens)  # the end-of-turn token was generated
        body = tokens[:end] if end is not None else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        meta: dict = {}
        hit = _first_stop(text, params.stop)
        if hit is not None:
            cut, stop = hit
            text, finish = text[:cut], "stop"
            count = self._tokens_until(body, stop)
            meta["stop"] = stop
        return Generation(
            text=text, prompt_tokens=n_prompt, completion_tokens=count, finish_reason=finish, meta=meta
        )

    def _tokens_until(self, tokens: list[int], stop: str) -> int:
        """How many tokens the model generated up to and including the one completing ``stop``."""
        lo, hi = 1, len(tokens)
        while lo < hi:  # decoded prefixes only grow, so the first prefix holding `stop` is found by bisection
            mid = (lo + hi) // 2
            if stop in self.tokenizer.decode(tokens[:mid], skip_special_tokens=True):
                hi = mid
            else:
                lo = mid + 1
        return lo

    # ---------------------------------------------------------------------------------------------
    # loglik

    def loglik(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        self._need("causal", "loglik")
        pairs = self.renderer.loglik_pairs(prompts, responses)
        self._check_fits([len(p) + len(r) for p, r in pairs], "loglik", "prompt+response")
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        return self._batched(order, lambda idx: self._loglik_batch([pairs[i] for i in idx]))

    @torch.inference_mode()
    def _loglik_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
        seqs = [p + r for p, r in pairs]
        # Right padding: real tokens keep positions 0..n-1 and never attend to padding (causal).
        input_ids, mask = _pad(seqs, self.pad_id, left=False, device=self.device)
        # Position t predicts token t+1: the response tokens [P, P+R) are predicted at [P-1, P+R-1).
        select = torch.zeros_like(mask, dtype=torch.bool)
        for row, (p, r) in enumerate(pairs):
            select[row, len(p) - 1 : len(p) + len(r) - 1] = True
        targets = torch.roll(input_ids, shifts=-1, dims=1)[select]
        logprobs = self._token_logprobs(input_ids, mask, select, targets)
        sizes = [len(r) for _, r in pairs]
        return [chunk.mean().item() for chunk in torch.split(logprobs, sizes)]

    def _token_logprobs(self, input_ids, mask, select, targets) -> torch.Tensor:
        vocab = self.model.get_output_embeddings().weight.shape[0]
        chunk = rows_per_chunk(vocab, self.logit_chunk_bytes)
        if self._exact_head:
            hidden = self._hidden(input_ids, mask)[select]
            picked = target_logits(hidden, targets, self.model.get_output_embeddings(), self._softcap)
            return chunked_token_logprobs(hidden, targets, self._head, chunk, picked=picked)
        # The model's head does something we do not reproduce: use its own full logits.
        logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        return chunked_token_logprobs(logits[select], targets, None, chunk)

    def _hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model.base_model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        return out.last_hidden_state

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head exactly as the model's forward applies it (checked by ``_probe_head``)."""
        return softcap_logits(self.model.get_output_embeddings()(hidden), self._softcap)

    @torch.inference_mode()
    def _probe_head(self) -> bool:
        """Check that backbone + ``_head`` reproduces the model's own logits on a short input.

        Models with an unusual head (logit scaling, extra projections) fail this and fall back to
        the model's own forward, which is correct but holds full logits for the batch.
        """
        ids = torch.tensor([self.prompt_ids("Hello! What is 2 + 2?")[:16]], device=self.device)
        mask = torch.ones_like(ids)
        reference = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        try:
            ours = self._head(self._hidden(ids, mask)).float()
        except Exception as exc:  # an architecture without a plain backbone/head split
            log.warning("%s: chunked log-prob head unavailable (%s); using full logits", self.spec.model, exc)
            return False
        if ours.shape != reference.shape:
            return False
        err = (ours - reference).abs().max().item()
        ok = err <= 1e-3 + 1e-2 * reference.abs().max().item()
        if not ok:
            log.warning(
                "%s: chunked log-prob head differs from the model's logits by %.3g; using full "
                "logits (more memory)",
                self.spec.model,
                err,
            )
        return ok

    # ---------------------------------------------------------------------------------------------
    # score

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        self._need(self.kind, "score")
        check_pairs(prompts, responses)
        if self.kind == "causal" and not (self._yes_ids and self._no_ids):
            raise EngineError(f"{self.spec.model}: no single-token 'Yes'/'No' in its vocabulary to judge")
        if self.kind == "reward":
            seqs = [self.renderer.reward_ids(p, r) for p, r in zip(prompts, responses, strict=True)]
            run: Callable[[list[int]], list[float]] = lambda idx: self._reward_batch([seqs[i] for i in idx])  # noqa: E731
        else:
            seqs = [self.renderer.judge_ids(p, r) for p, r in zip(prompts, responses, strict=True)]
            run = lambda idx: self._judge_batch([seqs[i] for i in idx])  # noqa: E731
        self._check_fits([len(s) for s in seqs], "score", "rendered input")
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        return self._batched(order, run)

    @torch.inference_mode()
    def _reward_batch(self, seqs: list[list[int]]) -> list[float]:
        pad = self.model.config.pad_token_id
        if pad is None and len(seqs) > 1:
            # The model finds each row's last token through its pad id; without one it cannot batch.
            return [v for s in seqs for v in self._reward_batch([s])]
        # Right padding with the model's own pad id: it reads the score at the last non-pad token,
        # exactly what it does on an unpadded row.
        input_ids, mask = _pad(seqs, pad if pad is not None else 0, left=False, device=self.device)
        logits = self.model(input_ids=input_ids, attention_mask=mask).logits
        return logits[:, 0].float().tolist()

    @torch.inference_mode()
    def _judge_batch(self, seqs: list[list[int]]) -> list[float]:
        input_ids, mask = _pad(seqs, self.pad_id, left=False, device=self.device)
        last = torch.tensor([len(s) - 1 for s in seqs], device=self.device)
        rows = torch.arange(len(seqs), device=self.device)
        yes_no = torch.tensor(self._yes_ids + self._no_ids, device=self.device)
        if self._exact_head:
            # The softmax normaliser cancels in log P(Yes) - log P(No): only these logits are needed,
            # and computing them in float32 keeps bf16 rounding out of the comparison.
            hidden = self._hidden(input_ids, mask)[rows, last]
            head = self.model.get_output_embeddings()
            logits = target_logits(hidden, yes_no.expand(len(seqs), -1), head, self._softcap)
        else:
            out = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
            logits = out.logits[rows, last][:, yes_no].float()
        n_yes = len(self._yes_ids)
        yes = torch.logsumexp(logits[:, :n_yes], dim=-1)
        no = torch.logsumexp(logits[:, n_yes:], dim=-1)
        return (yes - no).tolist()

    # ---------------------------------------------------------------------------------------------
    # plumbing

    def _closed(self) -> bool:
        return getattr(self, "model", None) is None

    def _batched(self, order: list[int], run: Callable[[list[int]], list[T]]) -> list[T]:
        """Run ``run`` over ``order`` in batches; results back in input order. On a memory error,
        halve the batch size (kept for later calls) and retry the same batch."""
        results: list[Any] = [None] * len(order)
        pos = 0
        while pos < len(order):
            idx = order[pos : pos + self.batch_size]
            try:
                values = run(idx)
            except Exception as exc:
                if not _is_oom(exc) or len(idx) == 1:
                    raise
                self.batch_size = max(1, len(idx) // 2)
                log.warning(
                    "%s: out of memory with batch %d; retrying with batch %d",
                    self.spec.model,
                    len(idx),
                    self.batch_size,
                )
                _free_memory()
                continue
            for i, v in zip(idx, values, strict=True):
                results[i] = v
            pos += len(idx)
        return results

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        _free_memory()

    def __enter__(self) -> TransformersEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TransformersEngine({self.fingerprint}, device={self.device}, batch_size={self.batch_size})"


# -------------------------------------------------------------------------------------------------
# helpers


def _pad(seqs: list[list[int]], pad_id: int, left: bool, device: torch.device, min_width: int = 1):
    width = max(min_width, *(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[row, span] = torch.tensor(s, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    hits = [(text.find(s), s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _context_length(config: Any, tokenizer: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:  # tokenizers use ~1e30 for "unset"
        return value
    raise EngineError("cannot tell the model's context length; set max_model_len in its spec")


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
