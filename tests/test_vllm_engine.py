"""The vLLM engine, with vLLM's CPU build, against the transformers engine on the same models.

vLLM lives in its own environment (.venv-vllm, `make vllm-env`). This one file serves both sides:
in the main environment (no vllm) it checks the install hint and then runs itself under
.venv-vllm's Python in a subprocess; there (vllm importable) the real tests below run. Both
engines run in float32, so greedy text matches token for token and log-probabilities agree to
~1e-4 (see test_openai_engine.py for why float32).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

from persyn.engines import ContextLengthError, EngineError, EngineSpec, GenerationParams

SMOL = "zoo:smollm2-135m-instruct"
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for staying focused.",
    "Explain what a prime number is.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
]
GREEDY = GenerationParams(max_new_tokens=32)


if not HAVE_VLLM:

    def test_without_vllm_the_error_names_the_extra():
        from persyn.engines.vllm_engine import VLLMEngine

        with pytest.raises(EngineError, match=r"pip install 'persyn\[vllm\]'"):
            VLLMEngine(EngineSpec(model=SMOL, engine="vllm"))

    @pytest.mark.zoo
    @pytest.mark.slow
    def test_vllm_engine_suite_in_the_vllm_environment():
        from servers import cpu_env, require_vllm_env, vllm_python

        require_vllm_env()
        from persyn.zoo import resolve_model

        resolve_model(SMOL)  # convert here, where the zoo's GGUF tools are installed
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                str(vllm_python()),
                "-m",
                "pytest",
                __file__,
                "-q",
                "-p",
                "no:cacheprovider",
                "--noconftest",
                "-rA",
            ],
            env=cpu_env(),
            capture_output=True,
            text=True,
            timeout=1200,
        )
        out = proc.stdout + proc.stderr
        print(f"\n.venv-vllm run took {time.monotonic() - t0:.1f} s\n{proc.stdout[-3000:]}")
        assert proc.returncode == 0, out[-8000:]
        assert " passed" in proc.stdout and " skipped" not in proc.stdout, proc.stdout[-3000:]

else:

    @pytest.fixture(scope="module")
    def vllm_engine():
        from persyn.engines.vllm_engine import VLLMEngine

        spec = EngineSpec(
            model=SMOL, engine="vllm", dtype="float32", max_model_len=2048, vllm_args={"enforce_eager": True}
        )
        t0 = time.monotonic()
        engine = VLLMEngine(spec)
        print(f"\nVLLMEngine started in {time.monotonic() - t0:.1f} s")
        yield engine
        engine.close()

    @pytest.fixture(scope="module")
    def reference():
        from persyn.engines.transformers_engine import TransformersEngine

        engine = TransformersEngine(EngineSpec(model=SMOL, dtype="float32"))
        yield engine
        engine.close()

    @pytest.fixture(scope="module")
    def reference_greedy(reference):
        return reference.generate(PROMPTS, GREEDY)

    def test_greedy_generation_matches_transformers(vllm_engine, reference, reference_greedy):
        got = vllm_engine.generate(PROMPTS, GREEDY)
        tok = reference.tokenizer
        same = 0
        for g, ref in zip(got, reference_greedy, strict=True):
            a = tok(g.text, add_special_tokens=False).input_ids
            b = tok(ref.text, add_special_tokens=False).input_ids
            assert a[:16] == b[:16], (g.text, ref.text)
            if g.text == ref.text:
                same += 1
                assert (g.finish_reason, g.completion_tokens, g.prompt_tokens) == (
                    ref.finish_reason,
                    ref.completion_tokens,
                    ref.prompt_tokens,
                )
        assert same >= len(PROMPTS) - 1, f"only {same}/{len(PROMPTS)} greedy texts identical"

    def test_describe_reports_the_dtype_vllm_runs(vllm_engine, reference):
        about = vllm_engine.describe()
        assert (about["engine"], about["dtype"]) == ("vllm", "float32")
        assert about["dtype_reason"] == "set in the config"
        assert about["fingerprint"] == vllm_engine.fingerprint
        assert reference.describe()["dtype"] == "float32"

    def test_loglik_matches_transformers(vllm_engine, reference, reference_greedy):
        prompts = [*PROMPTS, "Say hi."]
        responses = [g.text for g in reference_greedy] + ["\n\nHi!"]
        ours = vllm_engine.loglik(prompts, responses)
        ref = reference.loglik(prompts, responses)
        assert max(abs(a - b) for a, b in zip(ours, ref, strict=True)) < 1e-3, (ours, ref)
        scrambled = vllm_engine.loglik([PROMPTS[0]], [" ".join(reversed(responses[0].split()))])[0]
        assert scrambled < ours[0] - 0.5

    def test_judge_matches_transformers(vllm_engine, reference):
        prompts = ["What is 2 + 2?", "What is 2 + 2?", "Capital of France?", "Capital of France?"]
        responses = ["2 + 2 = 4.", "2 + 2 = 7.", "Paris.", "Berlin."]
        ours = vllm_engine.score(prompts, responses)
        ref = reference.score(prompts, responses)
        assert max(abs(a - b) for a, b in zip(ours, ref, strict=True)) < 0.05, (ours, ref)

    def test_seeded_sampling(vllm_engine):
        p1 = GenerationParams(max_new_tokens=16, temperature=1.0, seed=1)
        p2 = GenerationParams(max_new_tokens=16, temperature=1.0, seed=2)
        first = [g.text for g in vllm_engine.generate(PROMPTS[:4], p1)]
        again = [g.text for g in vllm_engine.generate(list(reversed(PROMPTS[:4])), p1)][::-1]
        alone = vllm_engine.generate(PROMPTS[2:3], p1)[0].text
        assert first == again and alone == first[2]
        assert first != [g.text for g in vllm_engine.generate(PROMPTS[:4], p2)]

    def test_context_overflow_names_the_items(vllm_engine):
        with pytest.raises(ContextLengthError) as info:
            vllm_engine.generate(["Say hi.", "word " * 3000], GenerationParams(max_new_tokens=4))
        assert info.value.indices == [1]

    def test_reward_model_through_the_pooling_runner(tmp_path):
        """A sequence-classification checkpoint is served by vLLM's pooling runner; its raw logit
        equals the transformers engine's reward. Closing ends the worker and vLLM's processes."""
        from servers import build_tiny_reward_model

        from persyn.engines.transformers_engine import TransformersEngine
        from persyn.engines.vllm_engine import VLLMEngine
        from persyn.zoo import resolve_model

        build_tiny_reward_model(tmp_path, resolve_model(SMOL))
        prompts = ["What is 2+2?", "Hi", "Tell me a joke"]
        responses = ["4", "Hello there, how are you?", "No."]
        ref = TransformersEngine(EngineSpec(model=str(tmp_path), dtype="float32"))
        expected = ref.score(prompts, responses)
        ref.close()
        with VLLMEngine(
            EngineSpec(model=str(tmp_path), engine="vllm", dtype="float32", vllm_args={"enforce_eager": True})
        ) as engine:
            assert engine.kind == "reward"
            got = engine.score(prompts, responses)
            with pytest.raises(EngineError, match="needs a causal model"):
                engine.generate(["hi"], GenerationParams(max_new_tokens=2))
            pid = engine._proc.pid
            os.killpg(pid, 0)  # the worker leads a process group holding vLLM's own processes
        time.sleep(0.5)
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # close() ended all of them
        with pytest.raises(EngineError, match="closed"):
            engine.score(prompts, responses)
        assert len(set(round(x, 3) for x in expected)) == 3  # distinct scores: the check can fail
        assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-3, (got, expected)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
