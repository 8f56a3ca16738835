"""The OpenAI-compatible HTTP engine: a teacher, student or judge served by vLLM, SGLang, TGI or a
hosted API, behind the three engine verbs.

* ``generate``: ``/v1/chat/completions`` (chat models) or ``/v1/completions`` with the completion
  template (base models, ``template: completion``). Sampling passes ``seed`` through, so a server
  that honours it (vLLM does) gives the same text for the same (seed, prompt).
* ``loglik``: the prompt is rendered client-side with the model's own tokenizer (the same token
  accounting as the transformers engine, see ``rendering.py``) and sent as token ids to
  ``/v1/completions`` with ``prompt_logprobs`` (vLLM, SGLang) or, failing that, ``echo`` +
  ``logprobs`` (the legacy OpenAI route). The response span is found by token offsets.
* ``score``: a judge's log P(Yes) - log P(No) through the same route (each Yes/No spelling appended
  as one more prompt token); or, for a reward model (``*ForSequenceClassification`` in the local
  config), the raw logit from vLLM's ``/classify`` endpoint.

Every request runs on one event loop in a background thread owned by the engine, with bounded
concurrency (``max_concurrency``), a token-bucket request rate (``requests_per_second``) and
retries with exponential backoff and full jitter on 429, 5xx, timeouts and dropped connections
(honouring ``Retry-After``). The synchronous verbs therefore work from any thread, with or without a
running event loop; ``agenerate``/``aloglik``/``ascore`` await the same work from async code.

Per-item failures: every verb takes ``return_exceptions``. By default an item that still fails after
its retries raises an ``EngineError`` naming it, once the whole batch has finished (so nothing that
succeeded is thrown away silently: ``last_results`` keeps the batch's per-item results). With
``return_exceptions=True`` the list holds an ``EngineError`` in that item's place and the caller
records a per-row error and goes on.

The API key is read from the environment variable named by ``api_key_env`` and lives only in the
client's headers: it is not in the repr, the fingerprint, the stats, error messages (redacted), or
a pickle of the engine (which re-reads the variable where it is unpickled).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from persyn.engines.base import ContextLengthError, EngineError, Generation, GenerationParams, check_pairs
from persyn.engines.ratelimit import TokenBucket
from persyn.engines.rendering import Renderer, check_template, fingerprint, model_kind, row_seed
from persyn.engines.spec import EngineSpec, local_model_path, model_identity

log = logging.getLogger(__name__)
T = TypeVar("T")

# 408 and 409 are "try again" on some gateways; 429 and 5xx are the usual transient refusals.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
_CONTEXT_MARKERS = ("maximum context length", "context length", "context_length_exceeded", "too long")


@dataclass
class EngineStats:
    """Counters since the engine was built. Mutated only on the engine's event-loop thread."""

    requests: int = 0  # HTTP requests sent, retries included
    items: int = 0  # items finished (successfully or not)
    retries: int = 0
    failures: int = 0  # items that failed for good
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)  # "429", "500", "timeout", ...

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "items": self.items,
            "retries": self.retries,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retry_reasons": dict(self.retry_reasons),
        }


class _Transient(Exception):
    """A failure worth retrying; `reason` is a short label for the stats."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after


class _LoopThread:
    """An asyncio loop in a daemon thread: sync callers submit coroutines and block on the result."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Awaitable[T]) -> asyncio.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def run(self, coro: Awaitable[T]) -> T:
        if threading.current_thread() is self.thread:
            raise EngineError("an engine verb was called from the engine's own event loop")
        return self.submit(coro).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class OpenAIEngine:
    """A model behind an OpenAI-compatible server (see the module docstring)."""

    #: The verbs take `return_exceptions=True` (per-item errors without re-sending the batch).
    supports_return_exceptions = True
    #: Backoff before retry n (0-based) is uniform(0, min(cap, base * 2**n)) ("full jitter").
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0

    def __init__(self, spec: EngineSpec, *, backoff_base_s: float | None = None):
        if not spec.base_url:
            raise EngineError(f"{spec.model}: engine 'openai' needs base_url (e.g. http://gpu-box:8000/v1)")
        self.spec = spec
        if backoff_base_s is not None:
            self.backoff_base_s = backoff_base_s
        self.base_url = spec.base_url.rstrip("/")
        # vLLM serves pooling routes (/classify) beside /v1, not under it.
        self.root_url = self.base_url.removesuffix("/v1")
        self._api_key = self._read_key(spec)
        check_template(spec.completion_template, ("prompt",), "completion_template")
        self.stats = EngineStats()
        self.last_results: list[Any] = []
        self._renderer: Renderer | None = None
        self._renderer_error: str | None = None
        self._served_name = spec.served_model_name
        self._logprob_route = "prompt_logprobs"  # falls back to "echo" if the server refuses it
        self._local_path = local_model_path(spec.model)
        if self._local_path is not None:
            self._renderer = Renderer.from_path(spec, self._local_path)
            self.kind = model_kind(self._local_path)
        else:
            self.kind = "causal"
        self.fingerprint = self._fingerprint()
        self._bucket = TokenBucket(spec.requests_per_second) if spec.requests_per_second else None
        self._loop = _LoopThread(name=f"persyn-openai-{spec.served_model_name or spec.model}")
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None

    # ---------------------------------------------------------------------------------------------
    # identity, key, tokenizer

    @staticmethod
    def _read_key(spec: EngineSpec) -> str | None:
        if not spec.api_key_env:
            return None
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise EngineError(
                f"{spec.model}: api_key_env names the environment variable {spec.api_key_env!r}, "
                "which is not set (or empty)"
            )
        return key

    def _fingerprint(self) -> str:
        spec, r = self.spec, self._renderer
        mode = r.mode if r else ("completion" if spec.template == "completion" else "chat")
        return fingerprint(
            "openai",
            spec,
            kind=self.kind,
            mode=mode,
            chat_template=getattr(r.tokenizer, "chat_template", None) if r else None,
            label=f"{spec.served_model_name or model_identity(spec.model)}@{self.base_url}",
            served_model_name=spec.served_model_name,
            base_url=self.base_url,
            judge_template=spec.judge_template if self.kind == "causal" else None,
        )

    @property
    def template_mode(self) -> str:
        if self._renderer is not None:
            return self._renderer.mode
        return "completion" if self.spec.template == "completion" else "chat"

    def renderer(self) -> Renderer:
        """The model's tokenizer-backed renderer; loglik and score need it."""
        if self._renderer is None:
            if self._renderer_error is None:
                try:  # a hub id whose tokenizer is in the local HF cache; never a download mid-run
                    self._renderer = Renderer.from_path(self.spec, self.spec.model, local_only=True)
                    return self._renderer
                except EngineError as exc:
                    self._renderer_error = str(exc)
            raise EngineError(
                f"{self.spec.model}: loglik/score over HTTP render the prompt with the model's own "
                "tokenizer, and none could be loaded locally; set `model` to a local folder or zoo "
                "alias holding the served model's tokenizer, or fetch it into the Hugging Face cache "
                "(`hf download MODEL` with the tokenizer files), and "
                "`served_model_name` to the name the server knows it by. "
                f"({self._redact(self._renderer_error or '')})"
            )
        return self._renderer

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.fingerprint}, max_concurrency={self.spec.max_concurrency})"

    __str__ = __repr__

    def __reduce__(self):
        # Rebuild from the spec where unpickled (re-reading the key there): the key never travels.
        return (type(self), (self.spec,))

    # ---------------------------------------------------------------------------------------------
    # the three verbs (sync) and their async forms

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, *, return_exceptions: bool = False
    ) -> list[Generation]:
        return self._loop.run(self._generate(list(prompts), params, return_exceptions))

    def loglik(
        self, prompts: Sequence[str], responses: Sequence[str], *, return_exceptions: bool = False
    ) -> list[float]:
        return self._loop.run(self._loglik(list(prompts), list(responses), return_exceptions))

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], *, return_exceptions: bool = False
    ) -> list[float]:
        return self._loop.run(self._score(list(prompts), list(responses), return_exceptions))

    async def agenerate(self, prompts, params, *, return_exceptions: bool = False) -> list[Generation]:
        return await asyncio.wrap_future(
            self._loop.submit(self._generate(list(prompts), params, return_exceptions))
        )

    async def aloglik(self, prompts, responses, *, return_exceptions: bool = False) -> list[float]:
        return await asyncio.wrap_future(
            self._loop.submit(self._loglik(list(prompts), list(responses), return_exceptions))
        )

    async def ascore(self, prompts, responses, *, return_exceptions: bool = False) -> list[float]:
        return await asyncio.wrap_future(
            self._loop.submit(self._score(list(prompts), list(responses), return_exceptions))
        )

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        if self._client is not None:
            self._loop.run(self._client.aclose())
            self._client = None
        self._loop.close()

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------
    # generate

    async def _generate(self, prompts: list[str], params: GenerationParams, return_exceptions: bool):
        self._need("causal", "generate")
        if params.max_new_tokens < 1:
            raise EngineError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
        name = await self._model_name()
        chat = self.template_mode == "chat"

        async def one(i: int) -> Generation:
            body: dict[str, Any] = {
                "model": name,
                "max_tokens": params.max_new_tokens,
                "temperature": max(0.0, params.temperature),
            }
            if not params.greedy:
                body["seed"] = row_seed(params.seed, prompts[i])
                if params.top_p < 1.0:
                    body["top_p"] = params.top_p
            if params.stop:
                body["stop"] = list(params.stop)
            if chat:
                body["messages"] = self._messages(prompts[i])
                path = "/chat/completions"
            else:
                body["prompt"] = self.spec.completion_template.format(prompt=prompts[i])
                path = "/completions"
            data, attempts, latency = await self._post(self.base_url + path, body, i)
            return self._to_generation(data, chat, attempts, latency)

        return await self._run_items(len(prompts), one, return_exceptions, "generate")

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.spec.system_prompt}] if self.spec.system_prompt else []
        return [*system, {"role": "user", "content": prompt}]

    def _to_generation(self, data: dict, chat: bool, attempts: int, latency: float) -> Generation:
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EngineError(f"malformed response (no choices[0] text): {str(data)[:300]}") from exc
        raw_finish = choice.get("finish_reason")
        if raw_finish in ("abort", "error"):  # vLLM's words for a request it gave up on: no answer
            raise EngineError(f"the server ended the request with finish_reason={raw_finish!r}")
        usage = data.get("usage") or {}
        meta: dict[str, Any] = {"retries": attempts - 1, "latency_s": round(latency, 4)}
        if raw_finish not in ("stop", "length"):
            meta["finish_reason_raw"] = raw_finish  # e.g. content_filter; recorded, counted as stop
        if choice.get("stop_reason") is not None and isinstance(choice["stop_reason"], str):
            meta["stop"] = choice["stop_reason"]
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        if not usage:
            meta["usage_missing"] = True
        return Generation(
            text=text or "",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason="length" if raw_finish == "length" else "stop",
            meta=meta,
        )

    # ---------------------------------------------------------------------------------------------
    # loglik

    async def _loglik(self, prompts: list[str], responses: list[str], return_exceptions: bool):
        check_pairs(prompts, responses)
        self._need("causal", "loglik")
        r = self.renderer()
        name = await self._model_name()

        async def one(i: int) -> float:
            p_ids, r_ids = r.loglik_pair(i, prompts[i], responses[i])
            seq = p_ids + r_ids
            logprobs = (await self._prompt_logprobs(name, [seq], i))[0]
            return sum(logprobs[len(p_ids) : len(seq)]) / len(r_ids)

        return await self._run_items(len(prompts), one, return_exceptions, "loglik")

    async def _prompt_logprobs(self, name: str, seqs: list[list[int]], item: int) -> list[list[float]]:
        """log p(token t | tokens < t) for every position t >= 1 of each sequence (index 0: nan)."""
        for _ in range(2):  # at most one switch of route
            route = self._logprob_route
            body: dict[str, Any] = {"model": name, "prompt": seqs, "max_tokens": 1, "temperature": 0.0}
            if route == "prompt_logprobs":
                body["prompt_logprobs"] = 0
            else:
                body.update(echo=True, logprobs=0)
            try:
                data, _, _ = await self._post(self.base_url + "/completions", body, item)
            except EngineError as exc:
                msg = str(exc)
                if route == "prompt_logprobs" and "prompt_logprobs" in msg and "max" not in msg.lower():
                    self._logprob_route = "echo"  # the server does not know the parameter
                    continue
                if "logprobs" in msg.lower():
                    raise EngineError(
                        f"{msg}\nThe server refused prompt log-probabilities; on vLLM, start it with "
                        "`--max-logprobs` >= 1 (the default 20 is enough)."
                    ) from exc
                raise
            choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != len(seqs):
                raise EngineError(f"expected {len(seqs)} choices, got {len(choices)}")
            if route == "prompt_logprobs" and any(c.get("prompt_logprobs") is None for c in choices):
                self._logprob_route = "echo"
                continue
            return [self._parse_logprobs(route, c, s) for c, s in zip(choices, seqs, strict=True)]
        raise EngineError(
            f"{self.base_url} returns no prompt log-probabilities: it supports neither vLLM's "
            "`prompt_logprobs` nor `echo` with `logprobs` on /completions, which loglik and judging "
            "need (hosted chat-only APIs do not; serve the model with vLLM or SGLang)"
        )

    @staticmethod
    def _parse_logprobs(route: str, choice: dict, seq: list[int]) -> list[float]:
        if route == "prompt_logprobs":
            entries = choice["prompt_logprobs"]
            if len(entries) < len(seq):
                raise EngineError(f"prompt_logprobs has {len(entries)} entries for {len(seq)} tokens")
            out = [math.nan]
            for t in range(1, len(seq)):
                entry = entries[t] or {}
                hit = entry.get(str(seq[t]))
                if hit is None:
                    raise EngineError(
                        f"prompt_logprobs at position {t} lacks the sent token {seq[t]}: the server "
                        "re-tokenised the prompt (token ids were not honoured)"
                    )
                out.append(float(hit["logprob"] if isinstance(hit, dict) else hit))
            return out
        lp = (choice.get("logprobs") or {}).get("token_logprobs")
        if not lp or len(lp) < len(seq):
            raise EngineError(
                "echo returned no per-token log-probabilities for the prompt; this endpoint does not "
                "support echo with logprobs"
            )
        return [math.nan] + [float(v) for v in lp[1 : len(seq)]]

    # ---------------------------------------------------------------------------------------------
    # score

    async def _score(self, prompts: list[str], responses: list[str], return_exceptions: bool):
        check_pairs(prompts, responses)
        r = self.renderer()
        name = await self._model_name()
        if self.kind == "reward":

            async def reward(i: int) -> float:
                ids = r.reward_ids(prompts[i], responses[i])
                body = {"model": name, "input": ids, "use_activation": False}
                data, _, _ = await self._post(self.root_url + "/classify", body, i)
                try:
                    return float(data["data"][0]["probs"][0])
                except (KeyError, IndexError, TypeError) as exc:
                    raise EngineError(f"malformed /classify response: {str(data)[:300]}") from exc

            return await self._run_items(len(prompts), reward, return_exceptions, "score")

        if not (r.yes_ids and r.no_ids):
            raise EngineError(f"{self.spec.model}: no single-token 'Yes'/'No' in its vocabulary to judge")
        cands = r.yes_ids + r.no_ids

        async def judge(i: int) -> float:
            seq = r.judge_ids(prompts[i], responses[i])
            # One request: the judging prompt with each answer token appended; the last position's
            # log-probability is exactly log P(candidate | judging prompt).
            rows = await self._prompt_logprobs(name, [seq + [c] for c in cands], i)
            last = [row[-1] for row in rows]
            n_yes = len(r.yes_ids)
            return _logsumexp(last[:n_yes]) - _logsumexp(last[n_yes:])

        return await self._run_items(len(prompts), judge, return_exceptions, "score")

    # ---------------------------------------------------------------------------------------------
    # plumbing

    def _need(self, kind: str, verb: str) -> None:
        if self.kind != kind:
            raise EngineError(f"{self.spec.model} is a {self.kind} model; {verb} needs a {kind} model")

    async def _model_name(self) -> str:
        """The name the server knows the model by: served_model_name, else the hub id, else the one
        model the server lists."""
        if self._served_name:
            return self._served_name
        if self._local_path is None:
            self._served_name = self.spec.model
            return self._served_name
        data, _, _ = await self._request("GET", self.base_url + "/models", None, -1)
        ids = [m.get("id") for m in data.get("data", [])]
        if len(ids) != 1:
            raise EngineError(
                f"{self.base_url} serves {len(ids)} models ({', '.join(map(str, ids))}); set "
                "served_model_name to the one to use"
            )
        self._served_name = ids[0]
        return self._served_name

    async def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            n = self.spec.max_concurrency
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(
                    self.spec.request_timeout_s, connect=min(30.0, self.spec.request_timeout_s)
                ),
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            )
            self._sem = asyncio.Semaphore(n)
        return self._client

    async def _post(self, url: str, body: dict, item: int) -> tuple[dict, int, float]:
        return await self._request("POST", url, body, item)

    async def _request(self, method: str, url: str, body: dict | None, item: int) -> tuple[dict, int, float]:
        """Send one request with retries. Returns (json, attempts, seconds of the good attempt)."""
        client = await self._ensure_client()
        assert self._sem is not None
        attempt = 0
        while True:
            if self._bucket is not None:
                await self._bucket.acquire()
            start = time.monotonic()
            try:
                async with self._sem:
                    self.stats.requests += 1
                    data = await self._attempt(client, method, url, body)
                usage = data.get("usage") if isinstance(data, dict) else None
                if isinstance(usage, dict):
                    self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                    self.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
                return data, attempt + 1, time.monotonic() - start
            except _Transient as exc:
                if attempt >= self.spec.max_retries:
                    where = f"item {item}: " if item >= 0 else ""
                    raise EngineError(
                        f"{where}{method} {url} failed after {attempt + 1} attempts; last error: "
                        f"{self._redact(str(exc))}"
                    ) from None
                self.stats.retries += 1
                self.stats.retry_reasons[exc.reason] = self.stats.retry_reasons.get(exc.reason, 0) + 1
                delay = random.uniform(0.0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.spec.request_timeout_s))
                attempt += 1
                await asyncio.sleep(delay)

    async def _attempt(self, client: httpx.AsyncClient, method: str, url: str, body: dict | None) -> dict:
        try:
            resp = await client.request(method, url, json=body)
        except httpx.TimeoutException as exc:
            raise _Transient("timeout", f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:  # refused, reset, dropped mid-response...
            raise _Transient("connection", f"{type(exc).__name__}: {exc}") from None
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError:
                raise _Transient("bad_body", f"unparseable 200 body: {resp.text[:200]!r}") from None
        detail = f"HTTP {resp.status_code}: {resp.text[:500]}"
        if resp.status_code in RETRY_STATUSES:
            raise _Transient(str(resp.status_code), detail, _retry_after(resp.headers.get("retry-after")))
        detail = self._redact(detail)
        if resp.status_code == 400 and any(m in resp.text.lower() for m in _CONTEXT_MARKERS):
            raise ContextLengthError(f"{self.spec.model}: input does not fit the context window: {detail}")
        if resp.status_code in (401, 403):
            detail += f" (check the key in ${self.spec.api_key_env})" if self.spec.api_key_env else ""
        raise EngineError(f"{method} {url}: {detail}")

    async def _run_items(
        self, n: int, one: Callable[[int], Awaitable[T]], return_exceptions: bool, verb: str
    ) -> list[T]:
        """Run one coroutine per item concurrently; per-item EngineErrors are collected, results are
        in input order."""

        async def guarded(i: int):
            try:
                return await one(i)
            except EngineError as exc:
                self.stats.failures += 1
                if isinstance(exc, ContextLengthError) and not exc.indices:
                    exc = ContextLengthError(f"item {i}: {exc}", indices=[i])
                elif not str(exc).startswith(f"item {i}:") and not isinstance(exc, ContextLengthError):
                    exc = EngineError(f"item {i}: {exc}")
                return exc
            finally:
                self.stats.items += 1

        results = await asyncio.gather(*(guarded(i) for i in range(n)))
        self.last_results = list(results)
        if not return_exceptions:
            errors = [(i, r) for i, r in enumerate(results) if isinstance(r, EngineError)]
            if errors:
                i, first = errors[0]
                if isinstance(first, ContextLengthError):
                    raise ContextLengthError(
                        f"{verb}: {len(errors)} of {n} items failed; first: {first}",
                        indices=[j for j, e in errors if isinstance(e, ContextLengthError)],
                    )
                raise EngineError(f"{verb}: {len(errors)} of {n} items failed; first: {first}")
        return results  # type: ignore[return-value]
