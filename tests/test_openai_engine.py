"""The OpenAI-compatible HTTP engine against a real `vllm serve` (from .venv-vllm) on SmolLM2.

One server per session (started by `vllm_server`, ~1 minute on 2 cores), shared by every test here.
Agreement with the transformers engine is checked with both in float32: then the two compute the
same function with different kernels, and greedy texts match token for token (in bf16 they drift
apart after a few dozen tokens, and mean log-probabilities differ by ~0.01-0.05).
"""

from __future__ import annotations

import asyncio
import http.server
import json
import pickle
import threading
import time

import pytest
from faultproxy import FaultProxy
from servers import SERVED_NAME, VLLMServer, require_vllm_env

from persyn.engines import ContextLengthError, EngineError, EngineSpec, GenerationParams
from persyn.engines.openai_engine import OpenAIEngine
from persyn.engines.rendering import Renderer

SMOL = "zoo:smollm2-135m-instruct"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for staying focused.",
    "Explain what a prime number is.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
]
GREEDY = GenerationParams(max_new_tokens=32)


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def smollm_path() -> str:
    from persyn.zoo import resolve_model

    return resolve_model(SMOL)


@pytest.fixture(scope="session")
def vllm_server(smollm_path, tmp_path_factory):
    require_vllm_env()
    server = VLLMServer(smollm_path, log_path=tmp_path_factory.mktemp("vllm") / "serve.log")
    server.start()
    print(f"\nvllm serve started in {server.startup_s:.1f} s")
    yield server
    server.stop()


def http_spec(base_url: str, **kw) -> EngineSpec:
    return EngineSpec(model=SMOL, engine="openai", base_url=base_url, served_model_name=SERVED_NAME, **kw)


@pytest.fixture(scope="module")
def http_engine(vllm_server):
    with OpenAIEngine(http_spec(vllm_server.base_url)) as engine:
        yield engine


@pytest.fixture(scope="module")
def reference():
    """The transformers engine on the same model, in float32 (see the module docstring)."""
    from persyn.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(EngineSpec(model=SMOL, dtype="float32"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def reference_greedy(reference):
    return reference.generate(PROMPTS, GREEDY)


# --------------------------------------------------------------------------------------------------
# rendering: the HTTP and vLLM engines tokenise exactly as the transformers engine


@pytest.mark.parametrize("template", ["auto", "completion"])
def test_renderer_matches_transformers_engine(template):
    from persyn.engines.transformers_engine import TransformersEngine

    spec = EngineSpec(model="zoo:tiny-llama-s1", template=template, system_prompt="Be brief.")
    ref = TransformersEngine(spec)
    r = Renderer(spec, ref.tokenizer)
    assert r.mode == ref.template_mode
    for p, resp in [("Hi there", " Hello!"), ("2+2?", "\n4"), ("Ünïcode ✓", "yes — sure")]:
        assert r.prompt_ids(p) == ref.prompt_ids(p)
        assert r.response_ids(resp) == ref.response_ids(resp)
        judge = ref.prompt_ids(ref.judge_template.format(prompt=p, response=resp))
        assert r.judge_ids(p, resp) == judge
    assert (r.yes_ids, r.no_ids) == (ref._yes_ids, ref._no_ids)
    ref.close()


# --------------------------------------------------------------------------------------------------
# agreement with the transformers engine


@pytest.mark.zoo
def test_greedy_generation_matches_transformers(http_engine, reference, reference_greedy):
    got = http_engine.generate(PROMPTS, GREEDY)
    tok = reference.tokenizer
    same = 0
    for g, ref in zip(got, reference_greedy, strict=True):
        a, b = (
            tok(g.text, add_special_tokens=False).input_ids,
            tok(ref.text, add_special_tokens=False).input_ids,
        )
        # "Nearly": float32 on both sides; a near-tie between two tokens may still flip late in a
        # response, so the first 16 tokens must agree everywhere and most texts must be identical.
        assert a[:16] == b[:16], (g.text, ref.text)
        if g.text == ref.text:
            same += 1
            assert g.finish_reason == ref.finish_reason
            assert g.completion_tokens == ref.completion_tokens
            assert g.prompt_tokens == ref.prompt_tokens
        assert g.meta["retries"] == 0
    assert same >= len(PROMPTS) - 1, f"only {same}/{len(PROMPTS)} greedy texts identical"
    assert http_engine.stats.snapshot()["completion_tokens"] >= sum(g.completion_tokens for g in got)


@pytest.mark.zoo
def test_loglik_matches_transformers(http_engine, reference, reference_greedy):
    responses = [g.text for g in reference_greedy]
    # Responses whose first token could merge with the prompt's last one if rendered as one string.
    prompts = [*PROMPTS, "Say hi.", "Count to three."]
    responses += ["\n\nHi!", " one, two, three"]
    ours = http_engine.loglik(prompts, responses)
    ref = reference.loglik(prompts, responses)
    for a, b in zip(ours, ref, strict=True):
        assert abs(a - b) < 0.05, (ours, ref)
    assert max(abs(a - b) for a, b in zip(ours, ref, strict=True)) < 1e-3  # float32 on both sides
    # The model prefers its own greedy answers to a scrambled one: the numbers mean something.
    scrambled = http_engine.loglik([PROMPTS[0]], [" ".join(reversed(responses[0].split()))])[0]
    assert scrambled < ours[0] - 0.5


@pytest.mark.zoo
def test_judge_matches_transformers(http_engine, reference):
    prompts = [
        "What is 2 + 2?",
        "What is 2 + 2?",
        "What is the capital of France?",
        "What is the capital of France?",
    ]
    responses = ["2 + 2 = 4.", "2 + 2 = 7.", "Paris.", "Berlin."]
    ours = http_engine.score(prompts, responses)
    ref = reference.score(prompts, responses)
    for a, b in zip(ours, ref, strict=True):
        assert abs(a - b) < 0.05, (ours, ref)


@pytest.mark.zoo
def test_seeded_sampling_is_reproducible_and_batch_independent(http_engine):
    p1 = GenerationParams(max_new_tokens=16, temperature=1.0, seed=1)
    p2 = GenerationParams(max_new_tokens=16, temperature=1.0, seed=2)
    first = [g.text for g in http_engine.generate(PROMPTS[:4], p1)]
    again = [g.text for g in http_engine.generate(list(reversed(PROMPTS[:4])), p1)][::-1]
    other = [g.text for g in http_engine.generate(PROMPTS[:4], p2)]
    assert first == again
    assert first != other


@pytest.mark.zoo
def test_reward_model_through_classify(smollm_path, tmp_path):
    """A reward model (sequence classification) served by vLLM: the engine reads the raw logit from
    /classify and agrees with the transformers engine. Its own short-lived server (~35 s)."""
    from servers import build_tiny_reward_model

    from persyn.engines.transformers_engine import TransformersEngine

    require_vllm_env()
    model = str(build_tiny_reward_model(tmp_path / "rm", smollm_path))
    prompts = ["What is 2+2?", "Hi", "Tell me a joke"]
    responses = ["4", "Hello there, how are you?", "No."]
    ref = TransformersEngine(EngineSpec(model=model, dtype="float32"))
    expected = ref.score(prompts, responses)
    ref.close()
    server = VLLMServer(model, log_path=tmp_path / "serve.log").start()
    try:
        with OpenAIEngine(EngineSpec(model=model, engine="openai", base_url=server.base_url)) as engine:
            assert engine.kind == "reward"
            got = engine.score(prompts, responses)  # served name found through /v1/models
    finally:
        server.stop()
    assert len({round(x, 3) for x in expected}) == 3  # distinct scores: the check can fail
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-3, (got, expected)


# --------------------------------------------------------------------------------------------------
# faults, retries, rate limit, per-item errors


@pytest.mark.zoo
def test_faulty_network_every_item_once(vllm_server, http_engine):
    prompts = [f"Say the number {i} in words." for i in range(16)]
    params = GenerationParams(max_new_tokens=8)
    direct = http_engine.generate(prompts, params)
    with FaultProxy(vllm_server.root_url, error=0.15, throttle=0.10, drop=0.10, reset=0.05, seed=7) as proxy:
        spec = http_spec(proxy.url + "/v1", max_retries=10, max_concurrency=8)
        with OpenAIEngine(spec, backoff_base_s=0.05) as engine:
            got = engine.generate(prompts, params)
            stats = engine.stats.snapshot()
    assert [g.text for g in got] == [g.text for g in direct]
    assert proxy.faults > 0  # the seed injects some faults into 16+ requests
    # Every injected fault costs exactly one retry, and every request reached the proxy.
    assert stats["retries"] == proxy.faults
    assert stats["requests"] == proxy.requests == len(prompts) + proxy.faults
    assert stats["failures"] == 0
    assert sum(g.meta["retries"] for g in got) == stats["retries"]
    reasons = stats["retry_reasons"]
    assert reasons.get("500", 0) == proxy.counts["error"]
    assert reasons.get("429", 0) == proxy.counts["throttle"]
    assert reasons.get("connection", 0) == proxy.counts["drop"] + proxy.counts["reset"]


@pytest.mark.zoo
def test_retry_after_is_honoured_and_failure_is_per_item(vllm_server):
    with FaultProxy(vllm_server.root_url, throttle=1.0, retry_after="1") as proxy:
        spec = http_spec(proxy.url + "/v1", max_retries=2)
        with OpenAIEngine(spec, backoff_base_s=0.01) as engine:
            t0 = time.monotonic()
            out = engine.generate(["Hi"], GenerationParams(max_new_tokens=2), return_exceptions=True)
            elapsed = time.monotonic() - t0
            assert isinstance(out[0], EngineError)
            assert "after 3 attempts" in str(out[0]) and "429" in str(out[0])
            assert elapsed >= 2.0  # two waits of Retry-After: 1, though the jittered backoff is ~0.01 s
            assert engine.stats.snapshot()["failures"] == 1
            with pytest.raises(EngineError, match="1 of 1 items failed"):
                engine.generate(["Hi"], GenerationParams(max_new_tokens=2))


@pytest.mark.zoo
def test_timeouts_are_retried(vllm_server):
    with FaultProxy(vllm_server.root_url, delay=1.0, delay_s=3.0) as proxy:
        spec = http_spec(proxy.url + "/v1", max_retries=1, request_timeout_s=0.5)
        with OpenAIEngine(spec, backoff_base_s=0.01) as engine:
            out = engine.generate(["Hi"], GenerationParams(max_new_tokens=2), return_exceptions=True)
            assert isinstance(out[0], EngineError) and "timed out" in str(out[0])
            assert engine.stats.retry_reasons == {"timeout": 1}


@pytest.mark.zoo
def test_request_rate_stays_under_the_limit(vllm_server):
    rate, n = 4.0, 17
    with FaultProxy(vllm_server.root_url) as proxy:
        spec = http_spec(proxy.url + "/v1", requests_per_second=rate, max_concurrency=16)
        with OpenAIEngine(spec) as engine:
            engine.generate([f"Count to {i}." for i in range(n)], GenerationParams(max_new_tokens=1))
    times = sorted(proxy.arrivals)
    assert len(times) == n
    # Measured where the requests arrive, so scheduling jitter on this busy 2-core machine shifts
    # single arrivals by up to ~0.2 s: hence the slack. Without the limiter all 17 requests (16 in
    # flight) arrive within a fraction of a second, a rate of 30+/s.
    measured = (n - 1) / (times[-1] - times[0])
    assert rate * 0.5 <= measured <= rate * 1.15, measured
    for t in times:  # a bucket of burst 1 lets at most 1 + rate * T requests start in T seconds
        assert sum(1 for u in times if t <= u <= t + 1.0) <= rate + 2, [round(u - times[0], 2) for u in times]


@pytest.mark.zoo
def test_context_overflow_is_a_per_item_error(http_engine):
    long_prompt = "word " * 3000  # > the server's --max-model-len 2048
    prompts = ["Say hi.", long_prompt, "Say bye."]
    out = http_engine.generate(prompts, GenerationParams(max_new_tokens=4), return_exceptions=True)
    assert isinstance(out[1], ContextLengthError) and out[1].indices == [1]
    assert out[0].text and out[2].text
    with pytest.raises(ContextLengthError) as info:
        http_engine.generate(prompts, GenerationParams(max_new_tokens=4))
    assert info.value.indices == [1]


@pytest.mark.zoo
def test_sync_verbs_work_inside_a_running_event_loop(http_engine):
    async def main():
        sync = http_engine.generate(["Say hi."], GenerationParams(max_new_tokens=4))  # blocks this loop
        a, b = await asyncio.gather(
            http_engine.agenerate(["Say hi."], GenerationParams(max_new_tokens=4)),
            http_engine.aloglik(["Say hi."], ["Hi!"]),
        )
        return sync, a, b

    sync, a, b = asyncio.run(main())
    assert sync[0].text == a[0].text and isinstance(b[0], float)


# --------------------------------------------------------------------------------------------------
# secrets and configuration errors


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """A server that refuses every request and echoes the request headers in its error body, as a
    careless gateway might."""

    seen: list[str] = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _EchoHandler.seen.append(self.headers.get("authorization", ""))
        body = json.dumps({"error": f"bad request; headers were {dict(self.headers)}"}).encode()
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_api_key_never_leaks(monkeypatch):
    key = "sk-persyn-test-0123456789abcdef"
    monkeypatch.setenv("PERSYN_TEST_API_KEY", key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = EngineSpec(
            model="some-org/hosted-model",
            engine="openai",
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
            api_key_env="PERSYN_TEST_API_KEY",
            max_retries=0,
        )
        with OpenAIEngine(spec) as engine:
            out = engine.generate(["hi"], GenerationParams(max_new_tokens=2), return_exceptions=True)
            assert _EchoHandler.seen == [f"Bearer {key}"]  # the key is really sent...
            err = out[0]
            assert isinstance(err, EngineError) and "400" in str(err)
            texts = [
                repr(engine),
                str(engine),
                engine.fingerprint,
                str(err),
                repr(err),
                json.dumps(engine.stats.snapshot()),
                spec.model_dump_json(),
            ]
            for text in texts:  # ...and appears nowhere else
                assert key not in text, text
            assert key.encode() not in pickle.dumps(engine)
            with pytest.raises(EngineError) as info:
                engine.generate(["hi"], GenerationParams(max_new_tokens=2))
            assert key not in str(info.value)
            # The loglik route needs the tokenizer; a hub id not in the local cache gives a clear
            # error at once (it is never downloaded mid-run).
            t0 = time.monotonic()
            with pytest.raises(EngineError, match="tokenizer"):
                engine.loglik(["hi"], ["there"])
            assert time.monotonic() - t0 < 10
    finally:
        server.shutdown()


def test_configuration_errors(monkeypatch):
    monkeypatch.delenv("PERSYN_NO_SUCH_KEY", raising=False)
    with pytest.raises(EngineError, match="base_url"):
        OpenAIEngine(EngineSpec(model="m", engine="openai"))
    with pytest.raises(EngineError, match="PERSYN_NO_SUCH_KEY"):
        OpenAIEngine(
            EngineSpec(
                model="m", engine="openai", base_url="http://127.0.0.1:9/v1", api_key_env="PERSYN_NO_SUCH_KEY"
            )
        )
