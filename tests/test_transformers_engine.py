"""The transformers engine: loglik against a naive reference, batching invariance, generation
(greedy, seeded sampling, finish reasons, stop strings), judging and reward models, context limits,
memory-error back-off. Fast tests use the tiny random Llama; `zoo` tests use the real models."""

from __future__ import annotations

import math
import shutil
from collections import Counter

import pytest
import torch
from conftest import make_engine

from persyn.engines import ContextLengthError, EngineError, EngineSpec, GenerationParams
from persyn.engines.decoding import decode
from persyn.engines.linear import RowBlockLinear
from persyn.engines.transformers_engine import SeededGumbelNoise, TransformersEngine, _pad
from persyn.zoo import resolve_model

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain, in a few sentences and with an example, how a hash map handles collisions.",
    "Hi",
    "List three prime numbers.",
]
RESPONSES = [
    "Paris.",
    "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time.",
    "A hash map puts colliding keys in the same bucket, for example in a linked list.",
    "Hello! How can I help you today?",
    "2, 3 and 5.",
]
GREEDY = GenerationParams(max_new_tokens=12)
SAMPLED = GenerationParams(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=7)


# --------------------------------------------------------------------------------------------------
# references: straightforward implementations of the documented token accounting


def reference_ids(engine: TransformersEngine, prompt: str) -> list[int]:
    tok = engine.tokenizer
    if engine.template_mode == "chat":
        sp = engine.spec.system_prompt
        system = [{"role": "system", "content": sp}] if sp else []
        text = tok.apply_chat_template(
            [*system, {"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tok(text, add_special_tokens=False).input_ids
    return tok(engine.spec.completion_template.format(prompt=prompt)).input_ids


def naive_loglik(engine: TransformersEngine, prompt: str, response: str) -> float:
    """Full logits, full float32 log_softmax, one unpadded sequence."""
    p = reference_ids(engine, prompt)
    r = engine.tokenizer(response, add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([p + r])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    positions = torch.arange(len(p) - 1, len(p) + len(r) - 1)
    return logp[positions, torch.tensor(r)].mean().item()


def naive_judge(engine: TransformersEngine, prompt: str, response: str) -> float:
    ids = reference_ids(engine, engine.judge_template.format(prompt=prompt, response=response))
    with torch.inference_mode():
        logp = torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    yes, no = single_tokens(engine, ("Yes", "yes", "YES")), single_tokens(engine, ("No", "no", "NO"))
    return (torch.logsumexp(logp[yes], 0) - torch.logsumexp(logp[no], 0)).item()


def single_tokens(engine: TransformersEngine, words) -> list[int]:
    """Every spelling, with and without a leading space, that is one token."""
    encoded = [engine.tokenizer(v, add_special_tokens=False).input_ids for w in words for v in (w, " " + w)]
    return sorted({ids[0] for ids in encoded if len(ids) == 1})


def assert_close(a, b, tol):
    assert len(a) == len(b)
    worst = max(abs(x - y) for x, y in zip(a, b, strict=True))
    assert worst <= tol, (worst, a, b)


@pytest.fixture
def fresh_tiny():
    """A private tiny engine for tests that change engine state."""
    engine = TransformersEngine(EngineSpec(model="zoo:tiny-llama-s0", dtype="float32", batch_size=8))
    yield engine
    engine.close()


# --------------------------------------------------------------------------------------------------
# loglik


def test_loglik_matches_naive_reference(tiny_engine):
    got = tiny_engine.loglik(PROMPTS, RESPONSES)
    want = [naive_loglik(tiny_engine, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert_close(got, want, 1e-4)
    assert len(set(round(x, 4) for x in got)) == len(got)  # a real signal, not a constant


def test_loglik_chunk_boundaries_change_nothing(fresh_tiny):
    whole = fresh_tiny.loglik(PROMPTS, RESPONSES)
    fresh_tiny.logit_chunk_bytes = 4 * 49152 * 3  # three rows of logits per chunk: many ragged chunks
    assert_close(fresh_tiny.loglik(PROMPTS, RESPONSES), whole, 1e-5)


def test_loglik_is_independent_of_padding_and_batch(tiny_engine_factory):
    engine = tiny_engine_factory(0, batch_size=2, batch_invariant=True)
    batched = engine.loglik(PROMPTS, RESPONSES)
    alone = [engine.loglik([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    reordered = engine.loglik(PROMPTS[::-1], RESPONSES[::-1])[::-1]
    assert batched == alone == reordered  # bit-identical: each row is computed as if alone


def test_loglik_bf16_is_batch_invariant(tiny_engine_factory):
    engine = tiny_engine_factory(0, dtype="bfloat16", batch_size=3, batch_invariant=True)
    alone = [engine.loglik([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert engine.loglik(PROMPTS, RESPONSES) == alone


def test_batch_invariance_follows_the_spec(tiny_engine_factory):
    """Off by default (the pipeline's batches make resumes exact without it); a config turns it
    on with `batch_invariant: true` (same values up to float noise)."""
    on, off = tiny_engine_factory(0, batch_invariant=True), tiny_engine_factory(0)
    assert on.batch_invariant and not off.batch_invariant
    assert on.model.config._attn_implementation != off.model.config._attn_implementation
    assert on.fingerprint == off.fingerprint  # speed and exactness, not what the model says
    assert isinstance(on.model.lm_head, RowBlockLinear) and type(off.model.lm_head) is torch.nn.Linear
    assert_close(off.loglik(PROMPTS, RESPONSES), on.loglik(PROMPTS, RESPONSES), 1e-4)


def test_cpu_allocator_setting_applies_on_glibc():
    """The engine asks glibc to reuse freed large blocks (attention.keep_freed_memory); mallopt
    reports failure as 0, which would come back False here."""
    import platform
    import sys

    from persyn.engines.attention import keep_freed_memory

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc


def test_loglik_refuses_bad_input(tiny_engine):
    with pytest.raises(EngineError, match="response 1 is empty"):
        tiny_engine.loglik(["a", "b"], ["x", ""])
    with pytest.raises(EngineError, match="2 prompts but 1 responses"):
        tiny_engine.loglik(["a", "b"], ["x"])


def test_head_probe_catches_a_head_it_does_not_reproduce(fresh_tiny):
    assert fresh_tiny._exact_head
    fresh_tiny._softcap = 2.0  # pretend the head soft-caps, which this Llama does not
    assert not fresh_tiny._probe_head()


def test_full_logits_fallback_agrees(fresh_tiny):
    want = fresh_tiny.loglik(PROMPTS, RESPONSES)
    judged = fresh_tiny.score(PROMPTS[:2], RESPONSES[:2])
    fresh_tiny._exact_head = False
    assert_close(fresh_tiny.loglik(PROMPTS, RESPONSES), want, 1e-5)
    assert_close(fresh_tiny.score(PROMPTS[:2], RESPONSES[:2]), judged, 1e-5)


def test_softcapped_head_matches_model_forward(tmp_path):
    """A Gemma-2 style model (final logit soft-capping): the chunked head must cap exactly as the
    model's forward does, or the reference comparison fails."""
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve_model("zoo:tiny-llama-s0"))
    cfg = Gemma2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        final_logit_softcapping=3.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, initializer_range=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    Gemma2ForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    engine = TransformersEngine(EngineSpec(model=str(tmp_path), dtype="float32"))
    assert engine._softcap == 3.0 and engine._exact_head
    got = engine.loglik(PROMPTS, RESPONSES)
    assert_close(got, [naive_loglik(engine, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)], 1e-4)
    engine.close()


# --------------------------------------------------------------------------------------------------
# generate


def test_greedy_is_reproducible_and_batch_invariant(tiny_engine_factory):
    tiny_engine = tiny_engine_factory(0, batch_invariant=True)
    first = tiny_engine.generate(PROMPTS, GREEDY)
    assert [g.text for g in tiny_engine.generate(PROMPTS, GREEDY)] == [g.text for g in first]
    alone = [tiny_engine.generate([p], GREEDY)[0].text for p in PROMPTS]
    assert alone == [g.text for g in first]
    assert len({g.text for g in first}) > 1  # the prompts matter


def test_a_one_token_prompt_prefills_like_any_other(tiny_engine_factory):
    """A prompt of one token alone is prefilled in the row blocks of whole sequences, as it is next
    to longer prompts, not in those of decoding steps (linear.py): its first logits are the same
    bits either way. (float32 MKL rounds 8-row and 64-row blocks differently on the Xeon.)"""
    engine = tiny_engine_factory(
        0, template="completion", completion_template="{prompt}", batch_invariant=True
    )
    assert len(engine.prompt_ids("Hello")) == 1
    first: list[torch.Tensor] = []

    def keep_first_logits(module, args, output):
        if not first:
            first.append(output.logits[:, -1].clone())

    hook = engine.model.register_forward_hook(keep_first_logits)
    try:
        engine.generate(["Hello"], GREEDY)
        alone = first.pop()[0]
        engine.generate(["Hello", PROMPTS[2]], GREEDY)
        together = first.pop()[0]
    finally:
        hook.remove()
    assert torch.equal(alone, together)


def _padded(engine, prompts):
    ids = [engine.prompt_ids(p) for p in prompts]
    return _pad(ids, engine.pad_id, left=True, device=engine.device)


def _cut_at_stop(rows, stop_ids):
    """model.generate's rows: each up to and including its first stop token (then padding)."""
    out = []
    for row in rows:
        end = next((k for k, t in enumerate(row) if t in stop_ids), None)
        out.append(row if end is None else row[: end + 1])
    return out


def _staggered_stops(free: list[list[int]]) -> set[int]:
    """Stop tokens that would end the rows of a batch decoded without stops (``free``) at different
    steps: for row i > 0, its token at step 2 + 3i, unless row 0 (which must run to the end) has it."""
    steps = len(free[0])
    stops = {row[min(2 + 3 * i, steps - 1)] for i, row in enumerate(free[1:])}
    return stops - set(free[0])


def test_decode_matches_model_generate_while_rows_leave(tiny_engine_factory):
    """Rows finishing at different steps leave the batch; every row's tokens are still exactly
    model.generate's (bf16, batch-invariant attention), and the batch really shrinks."""
    engine = tiny_engine_factory(0, dtype="bfloat16", batch_invariant=True)
    input_ids, mask = _padded(engine, PROMPTS)
    stops = _staggered_stops(decode(engine.model, input_ids, mask, max_new_tokens=16, stop_ids=set()))
    batch_sizes = []
    hook = engine.model.register_forward_pre_hook(
        lambda _m, _a, kw: batch_sizes.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        ours = decode(engine.model, input_ids, mask, max_new_tokens=16, stop_ids=stops, min_rows=2)
    finally:
        hook.remove()
    with torch.inference_mode():
        theirs = engine.model.generate(
            input_ids=input_ids, attention_mask=mask, max_new_tokens=16, do_sample=False, top_p=None,
            top_k=None, temperature=None, eos_token_id=sorted(stops), pad_token_id=engine.pad_id,
        )  # fmt: skip
    assert ours == _cut_at_stop(theirs[:, input_ids.shape[1] :].tolist(), stops)
    ended = sum(1 for row in ours if row[-1] in stops)
    assert ended >= 2 and len(ours[0]) == 16  # several rows stopped early, one ran to the end
    assert batch_sizes[0] == len(PROMPTS) and min(batch_sizes) == 2  # a passenger keeps two rows
    assert sorted(batch_sizes, reverse=True) == batch_sizes and len(set(batch_sizes)) > 2


def test_sampled_rows_keep_their_noise_when_others_leave(tiny_engine_factory):
    """Seeded sampling with rows leaving: each row's tokens equal its tokens decoded alone."""
    engine = tiny_engine_factory(0, dtype="bfloat16", batch_invariant=True)

    def sample(prompts, stops):
        ids, m = _padded(engine, prompts)
        procs = engine._processors(prompts, SAMPLED)
        return decode(engine.model, ids, m, max_new_tokens=16, stop_ids=stops, processors=procs, min_rows=2)

    stops = _staggered_stops(sample(PROMPTS, set()))
    together = sample(PROMPTS, stops)
    alone = [sample([p, p], stops)[0] for p in PROMPTS]
    assert together == alone
    assert sum(1 for row in together if row[-1] in stops) >= 2 and len(together[0]) == 16


def test_sampling_is_seeded_per_prompt_not_per_batch(tiny_engine_factory):
    engine = tiny_engine_factory(0, batch_size=2, batch_invariant=True)
    together = [g.text for g in engine.generate(PROMPTS, SAMPLED)]
    alone = [engine.generate([p], SAMPLED)[0].text for p in PROMPTS]
    shuffled = [g.text for g in engine.generate(PROMPTS[::-1], SAMPLED)][::-1]
    assert together == alone == shuffled
    other_seed = engine.generate(PROMPTS, GenerationParams(max_new_tokens=12, temperature=0.9, seed=8))
    assert all(a != b.text for a, b in zip(together, other_seed, strict=True))
    assert together != [g.text for g in engine.generate(PROMPTS, GREEDY)]


def test_different_seeds_are_different_teachers(tiny_engine_factory):
    a = tiny_engine_factory(0).generate(PROMPTS[:2], GREEDY)
    b = tiny_engine_factory(1).generate(PROMPTS[:2], GREEDY)
    assert [g.text for g in a] != [g.text for g in b]
    assert tiny_engine_factory(0).fingerprint != tiny_engine_factory(1).fingerprint


def test_gumbel_noise_draws_exact_samples():
    """argmax(logits + Gumbel) with per-row seeds follows softmax(logits)."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20000
    noise = SeededGumbelNoise(range(n))
    picks = noise(None, probs.log().expand(n, -1).clone()).argmax(-1)
    counts = Counter(picks.tolist())
    for k, p in enumerate(probs.tolist()):
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(counts[k] / n - p) < 5 * sd, (k, counts[k] / n, p)


def test_temperature_and_top_p_shape_the_sample(tiny_engine):
    logits = torch.tensor([[3.0, 2.0, 1.0, -1.0]]).expand(4000, -1).clone()
    prompts = [f"p{i}" for i in range(4000)]
    params = GenerationParams(temperature=0.5, top_p=0.95, seed=1)
    picks = tiny_engine._processors(prompts, params)(None, logits.clone()).argmax(-1)
    assert set(picks.tolist()) == {0, 1}  # at T=0.5, p = .873 .118 .016 .0003: top-p .95 keeps two
    p0 = 1 / (1 + math.exp(-2.0))  # softmax([6, 4]) renormalised over the nucleus
    assert abs((picks == 0).float().mean().item() - p0) < 0.03


def test_finish_reason_length(tiny_engine):
    (g,) = tiny_engine.generate(["Count to ten."], GenerationParams(max_new_tokens=5))
    assert g.finish_reason == "length" and g.completion_tokens == 5
    assert g.prompt_tokens == len(reference_ids(tiny_engine, "Count to ten."))


def test_stop_string_truncates_and_reports_stop(tiny_engine):
    long = tiny_engine.generate([PROMPTS[0]], GenerationParams(max_new_tokens=20))[0]
    assert long.finish_reason == "length"
    words = long.text.split()
    stop = words[len(words) // 2]
    want = long.text[: long.text.find(stop)]
    (g,) = tiny_engine.generate([PROMPTS[0]], GenerationParams(max_new_tokens=20, stop=(stop,)))
    assert g.text == want
    assert g.finish_reason == "stop" and g.meta == {"stop": stop}
    assert 0 < g.completion_tokens < 20


def test_generation_strips_special_tokens(tiny_engine):
    for g in tiny_engine.generate(PROMPTS, GREEDY):
        assert "<|im_end|>" not in g.text and "<|im_start|>" not in g.text


# --------------------------------------------------------------------------------------------------
# score: LM judge and reward model


def test_judge_matches_naive_reference(tiny_engine):
    got = tiny_engine.score(PROMPTS[:3], RESPONSES[:3])
    want = [naive_judge(tiny_engine, p, r) for p, r in zip(PROMPTS[:3], RESPONSES[:3], strict=True)]
    assert_close(got, want, 1e-4)


def test_judge_counts_every_single_token_spelling(tiny_engine):
    assert tiny_engine._yes_ids == single_tokens(tiny_engine, ("Yes", "yes", "YES"))
    assert tiny_engine._no_ids == single_tokens(tiny_engine, ("No", "no", "NO"))
    tok = tiny_engine.tokenizer
    for word in ("Yes", " Yes", "No", " No"):
        (token,) = tok(word, add_special_tokens=False).input_ids
        assert token in tiny_engine._yes_ids + tiny_engine._no_ids
    assert not set(tiny_engine._yes_ids) & set(tiny_engine._no_ids)


def test_reward_model_scores_the_rendered_conversation(tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(resolve_model("zoo:tiny-llama-s0"))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id,
        initializer_range=0.2,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    engine = TransformersEngine(EngineSpec(model=str(tmp_path), dtype="float32", batch_size=3))
    assert engine.kind == "reward"
    got = engine.score(PROMPTS, RESPONSES)
    want = []
    for p, r in zip(PROMPTS, RESPONSES, strict=True):
        conv = [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        ids = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False).input_ids
        with torch.inference_mode():
            want.append(engine.model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    assert_close(got, want, 1e-4)
    assert len(set(got)) == len(got)
    with pytest.raises(EngineError, match="reward model"):
        engine.generate(PROMPTS[:1], GREEDY)
    engine.close()


# --------------------------------------------------------------------------------------------------
# context, templates, identity, memory


def test_context_overflow_names_the_input(tiny_engine_factory):
    engine = tiny_engine_factory(0, max_model_len=48)
    long = "word " * 60
    with pytest.raises(ContextLengthError, match="prompt 1") as err:
        engine.loglik(["short", "short"], ["ok", long])
    assert err.value.indices == [1]
    with pytest.raises(ContextLengthError, match="prompt 0 has") as err:
        engine.generate([long, "hi"], GenerationParams(max_new_tokens=4))
    assert err.value.indices == [0]
    # The prompt fits, but not with the room asked for the answer.
    with pytest.raises(ContextLengthError, match="max_new_tokens=40"):
        engine.generate(["hi"], GenerationParams(max_new_tokens=40))
    with pytest.raises(ContextLengthError, match="prompt 0"):
        engine.score([long], ["x"])
    assert engine.loglik(["short"], ["ok"])  # what fits still runs


def test_templates_and_system_prompt(tiny_engine_factory, tmp_path):
    chat = tiny_engine_factory(0)
    assert chat.template_mode == "chat" and chat.render("Q").endswith("<|im_start|>assistant\n")
    completion = tiny_engine_factory(0, template="completion", completion_template="Q: {prompt}\nA:")
    assert completion.render("2+2?") == "Q: 2+2?\nA:"
    system = tiny_engine_factory(0, system_prompt="You are terse.")
    assert "You are terse." in system.render("Q")
    assert len({chat.fingerprint, completion.fingerprint, system.fingerprint}) == 3
    assert chat.fingerprint == TransformersEngine(chat.spec).fingerprint  # stable across loads
    assert chat.fingerprint != tiny_engine_factory(0, dtype="bfloat16").fingerprint

    # A model without a chat template: auto falls back to completion, chat is refused.
    plain = tmp_path / "plain"
    shutil.copytree(resolve_model("zoo:tiny-llama-s0"), plain)
    (plain / "chat_template.jinja").unlink()
    assert TransformersEngine(EngineSpec(model=str(plain))).template_mode == "completion"
    with pytest.raises(EngineError, match="no chat template"):
        TransformersEngine(EngineSpec(model=str(plain), template="chat"))
    with pytest.raises(EngineError, match="lacks"):
        TransformersEngine(EngineSpec(model=str(plain), completion_template="no placeholder"))


def test_memory_error_halves_the_batch_and_retries(fresh_tiny, monkeypatch):
    want = fresh_tiny.loglik(PROMPTS, RESPONSES)
    real = fresh_tiny._loglik_batch
    seen = []

    def flaky(pairs):
        seen.append(len(pairs))
        if len(pairs) > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return real(pairs)

    monkeypatch.setattr(fresh_tiny, "_loglik_batch", flaky)
    assert fresh_tiny.loglik(PROMPTS, RESPONSES) == want
    assert seen[:2] == [5, 2] and fresh_tiny.batch_size == 2
    monkeypatch.setattr(fresh_tiny, "_loglik_batch", lambda pairs: (_ for _ in ()).throw(ValueError("x")))
    with pytest.raises(ValueError):  # other errors are not retried
        fresh_tiny.loglik(PROMPTS, RESPONSES)


def test_closed_engine_refuses_work():
    engine = TransformersEngine(EngineSpec(model="zoo:tiny-llama-s0", dtype="float32"))
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.loglik(["a"], ["b"])


# --------------------------------------------------------------------------------------------------
# real models


@pytest.fixture(scope="module")
def smollm_fp32():
    engine = TransformersEngine(EngineSpec(model="zoo:smollm2-135m-instruct", dtype="float32"))
    yield engine
    engine.close()


@pytest.mark.zoo
def test_smollm_loglik_matches_naive_reference(smollm_fp32):
    got = smollm_fp32.loglik(PROMPTS, RESPONSES)
    want = [naive_loglik(smollm_fp32, p, r) for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert_close(got, want, 1e-4)
    # A sensible answer is far likelier under a real model than the same words shuffled (the
    # model's own greedy answer here; measured -0.37 against -4.8).
    sensible, shuffled = smollm_fp32.loglik(
        [PROMPTS[0]] * 2, ["The capital of France is Paris.", "is France. The Paris capital of"]
    )
    assert sensible > shuffled + 1


@pytest.mark.zoo
@pytest.mark.slow
def test_gemma_chunked_loglik_matches_naive_reference():
    """Gemma-3's 262K vocabulary: the head runs in chunks of 64 rows, so these responses span
    several chunks; base model, so the completion template (with <bos>) is used."""
    engine = TransformersEngine(EngineSpec(model="zoo:gemma3-270m", dtype="float32"))
    assert engine.template_mode == "completion"
    assert engine.prompt_ids("x")[0] == engine.tokenizer.bos_token_id
    prompts, responses = PROMPTS[1:3], [RESPONSES[1] * 2, RESPONSES[2] * 2]
    assert sum(len(engine.response_ids(r)) for r in responses) > 64
    got = engine.loglik(prompts, responses)
    assert_close(got, [naive_loglik(engine, p, r) for p, r in zip(prompts, responses, strict=True)], 1e-4)
    engine.close()


@pytest.mark.zoo
def test_smollm_stops_at_end_of_turn(smollm_engine):
    done, cut = smollm_engine.generate(
        ["What is the capital of France? Answer in one sentence.", "Tell me a long story about a dragon."],
        GenerationParams(max_new_tokens=24),
    )
    assert done.finish_reason == "stop" and "Paris" in done.text
    assert done.completion_tokens < 24 and "<|im_end|>" not in done.text
    assert cut.finish_reason == "length" and cut.completion_tokens == 24


@pytest.mark.zoo
@pytest.mark.parametrize("model", ["zoo:smollm2-135m-instruct", "zoo:gemma3-270m"])
def test_zoo_bf16_sampling_is_batch_invariant(model):
    """With `batch_invariant: true`, a prompt samples the same text alone, in a pair and in the
    whole batch (SmolLM2: 30 narrow layers; Gemma 3: sliding-window layers, one key/value head)."""
    engine = make_engine(model, batch_invariant=True)
    params = GenerationParams(max_new_tokens=24, temperature=1.0, seed=11)
    together = [g.text for g in engine.generate(PROMPTS, params)]
    alone = [engine.generate([p], params)[0].text for p in PROMPTS]
    pairs = [engine.generate([p, PROMPTS[-1 - i]], params)[0].text for i, p in enumerate(PROMPTS)]
    engine.close()
    assert together == alone == pairs


# (request, an obviously right answer, an obviously wrong one): facts, arithmetic, code, advice,
# writing, extraction, summary. Not chosen to suit the judge.
JUDGE_PAIRS = [
    ("What is the capital of France?", "Paris", "Berlin"),
    ("Translate 'bonjour' to English.", "Hello.", "Goodbye."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare.", "Charles Dickens."),
    ("What is 12 + 15?", "27", "32"),
    (
        "A shop sells pens at 3 dollars each. How much do 4 pens cost?",
        "4 pens cost 4 x 3 = 12 dollars.",
        "4 pens cost 4 + 3 = 7 dollars.",
    ),
    (
        "Write a Python function that returns the square of a number.",
        "def square(x):\n    return x * x",
        "def square(x):\n    return x + 2",
    ),
    (
        "Give two tips for sleeping better.",
        "1. Keep a regular bedtime. 2. Avoid screens an hour before bed.",
        "Bananas are yellow and grow in bunches.",
    ),
    (
        "Write a haiku about the sea.",
        "Waves fold into foam,\nsalt wind carries gull voices,\nthe tide keeps its time.",
        "I don't know.",
    ),
    (
        "Extract the email address from: 'Contact Jane at jane@example.com for details.'",
        "jane@example.com",
        "Jane",
    ),
    (
        "Explain why the sky is blue in one sentence.",
        "Air molecules scatter blue sunlight more than red light, so the sky looks blue.",
        "The sky is blue because the ocean reflects onto it like a mirror.",
    ),
    ("How many legs does a spider have?", "Eight.", "Six."),
    (
        "Summarise: 'The meeting moved from Monday to Wednesday because the room was booked.'",
        "The meeting was moved to Wednesday since the room was taken on Monday.",
        "The meeting was cancelled.",
    ),
    (
        "Is 17 a prime number?",
        "Yes, 17 is prime: its only divisors are 1 and 17.",
        "No, 17 is divisible by 3.",
    ),
    (
        "Write a short polite email declining a meeting invitation.",
        "Hi Sam, thank you for the invitation. Unfortunately I can't attend this time, "
        "but please share the notes. Best, Alex",
        "meeting meeting no no no",
    ),
]


@pytest.mark.zoo
def test_qwen_judge_ranks_right_above_wrong(qwen_engine):
    """The default judging prompt on Qwen2.5-Coder-0.5B (bf16) ranked the right answer higher in
    12 of these 14 pairs (Intel Xeon with AMX; the earlier default prompt also 12, an AMD EPYC run
    of it 11); a judge that ignores the answer or reads it backwards gets about half. A small model
    is a weak judge: the bar is a clear majority, not all."""
    prompts = [c[0] for c in JUDGE_PAIRS]
    good = qwen_engine.score(prompts, [c[1] for c in JUDGE_PAIRS])
    bad = qwen_engine.score(prompts, [c[2] for c in JUDGE_PAIRS])
    wins = sum(g > b for g, b in zip(good, bad, strict=True))
    assert wins >= 10, (wins, good, bad)
    # The plainest pairs it must get right.
    assert all(good[i] > bad[i] for i in (0, 1, 2)), (good, bad)
