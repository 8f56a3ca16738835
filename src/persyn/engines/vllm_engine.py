"""The vLLM engine: a model in an in-process ``vllm.LLM``, one worker process per model.

* Each engine owns a spawned worker process that builds the ``LLM`` and answers requests over a
  pipe; ``close()`` ends the process, so a teacher's GPU memory is back before the next one loads
  (vLLM does not reliably free it inside a living process). Spawn, not fork: CUDA cannot be
  re-initialised in a forked child. As with any spawn, a script that builds this engine needs an
  ``if __name__ == "__main__":`` guard.
* Prompts are rendered and tokenised here, exactly as the transformers engine does
  (``rendering.py``), and sent as token ids, so all back ends score the same tokens.
* ``generate``: ``SamplingParams`` with a per-request ``seed``: the same (seed, prompt) gives the
  same text whatever batch it lands in. Stops on the tokenizer's end-of-turn tokens.
* ``loglik``: ``prompt_logprobs`` of prompt+response, averaged over the response span.
* ``score``: a judge's log P(Yes) - log P(No) (each answer token appended, read from
  ``prompt_logprobs``); or, for a ``*ForSequenceClassification`` reward model, the pooling runner
  (``LLM(..., runner="pooling")``, ``classify`` without activation: the raw reward logit).
* ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``dtype`` come from the
  spec; anything else vLLM takes goes in ``spec.vllm_args``.

vLLM is imported only inside the worker; without it, building the engine says how to install it.
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing as mp
import os
import signal
import traceback
from collections.abc import Sequence
from typing import Any

from persyn.engines.base import EngineError, Generation, GenerationParams, LocalChecks, check_pairs
from persyn.engines.rendering import Renderer, fingerprint, model_kind, row_seed
from persyn.engines.spec import EngineSpec, resolve_model

INSTALL_HINT = "pip install 'persyn[vllm]'"


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class VLLMEngine(LocalChecks):
    """A model in a vLLM worker process behind the engine protocol (see the module docstring)."""

    def __init__(self, spec: EngineSpec, *, startup_timeout_s: float = 1800.0):
        if importlib.util.find_spec("vllm") is None:
            raise EngineError(
                f"{spec.model}: engine 'vllm' needs vLLM, which is not installed: {INSTALL_HINT}"
            )
        self.spec = spec
        self.path = resolve_model(spec.model)
        self.kind = model_kind(self.path) if os.path.isdir(self.path) else "causal"
        self.renderer = Renderer.from_path(spec, self.path)
        r = self.renderer
        self.fingerprint = fingerprint(
            "vllm",
            spec,
            kind=self.kind,
            mode=r.mode,
            chat_template=getattr(r.tokenizer, "chat_template", None),
            dtype=spec.dtype,
            judge_template=r.judge_template if self.kind == "causal" else None,
        )
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # Not a daemon: vLLM starts processes of its own, which daemonic processes may not.
        # Only EngineSpec's own fields travel (a config's TeacherConfig adds name, family...).
        fields = spec.model_dump(include=set(EngineSpec.model_fields))
        self._proc = ctx.Process(
            target=_worker_main, args=(child, fields, self.path, self.kind), name="persyn-vllm"
        )
        self._proc.start()
        child.close()
        try:
            if not self._conn.poll(startup_timeout_s):
                raise EngineError(f"{spec.model}: vLLM did not start within {startup_timeout_s:.0f} s")
            self.info = self._reply()
        except BaseException:
            self._kill()
            raise
        self.max_len: int = self.info["max_model_len"]

    def describe(self) -> dict[str, Any]:
        """How this model actually runs (recorded in the run's state and report)."""
        return {
            "engine": "vllm",
            "model": self.spec.model,
            "fingerprint": self.fingerprint,
            "dtype": self.info.get("dtype"),
            "dtype_reason": "set in the config" if self.spec.dtype != "auto" else "auto: vLLM's choice",
            "tensor_parallel_size": self.spec.tensor_parallel_size,
        }

    # ---------------------------------------------------------------------------------------------
    # verbs

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[Generation]:
        self._need("causal", "generate")
        if params.max_new_tokens < 1:
            raise EngineError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
        ids = [self.renderer.prompt_ids(p) for p in prompts]
        self._check_prompts_fit(ids, params.max_new_tokens)
        seeds = [row_seed(params.seed, p) for p in prompts]
        rows = self._call("generate", ids, seeds, _params_dict(params), self.renderer.stop_token_ids())
        return [Generation(**row) for row in rows]

    def loglik(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        self._need("causal", "loglik")
        pairs = self.renderer.loglik_pairs(prompts, responses)
        self._check_fits([len(p) + len(r) for p, r in pairs], "loglik", "prompt+response")
        rows = self._call("prompt_logprobs", [p + r for p, r in pairs])
        return [sum(row[len(p) :]) / len(r) for row, (p, r) in zip(rows, pairs, strict=True)]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        check_pairs(prompts, responses)
        r = self.renderer
        if self.kind == "reward":
            seqs = [r.reward_ids(p, x) for p, x in zip(prompts, responses, strict=True)]
            self._check_fits([len(s) for s in seqs], "score", "rendered input")
            return self._call("reward", seqs)
        if not (r.yes_ids and r.no_ids):
            raise EngineError(f"{self.spec.model}: no single-token 'Yes'/'No' in its vocabulary to judge")
        seqs = [r.judge_ids(p, x) for p, x in zip(prompts, responses, strict=True)]
        self._check_fits([len(s) + 1 for s in seqs], "score", "rendered input")
        cands = r.yes_ids + r.no_ids
        # Each answer token appended as one more prompt token: its prompt log-probability is
        # exactly log P(answer | judging prompt). vLLM's prefix cache shares the judging prompt.
        rows = self._call("prompt_logprobs", [s + [c] for s in seqs for c in cands])
        n, n_yes = len(cands), len(r.yes_ids)
        out = []
        for k in range(len(seqs)):
            last = [row[-1] for row in rows[k * n : (k + 1) * n]]
            out.append(_logsumexp(last[:n_yes]) - _logsumexp(last[n_yes:]))
        return out

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.is_alive():
                self._conn.send(("close", ()))
                self._proc.join(timeout=120)
        except (OSError, EOFError, BrokenPipeError):
            pass
        self._kill()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"VLLMEngine({self.fingerprint}, tp={self.spec.tensor_parallel_size})"

    # ---------------------------------------------------------------------------------------------
    # plumbing

    def _kill(self) -> None:
        """End the worker and every process vLLM started under it (the worker's process group)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:  # no group (yet): the worker alone
                pass
            if proc.is_alive():
                proc.terminate() if sig == signal.SIGTERM else proc.kill()
            proc.join(timeout=30)
            if not proc.is_alive() and not _group_alive(proc.pid):
                break
        self._conn.close()

    def _closed(self) -> bool:
        return self._proc is None

    def _call(self, op: str, *args: Any) -> Any:
        if self._proc is None:
            raise EngineError(f"{self.spec.model}: engine is closed")
        try:
            self._conn.send((op, args))
            return self._reply()
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            code = self._proc.exitcode if self._proc else None
            self._kill()
            raise EngineError(f"{self.spec.model}: the vLLM worker died (exit code {code})") from exc

    def _reply(self) -> Any:
        status, payload = self._conn.recv()
        if status == "ok":
            return payload
        if isinstance(payload, BaseException):
            raise payload
        raise EngineError(f"{self.spec.model}: vLLM worker failed:\n{payload}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _params_dict(params: GenerationParams) -> dict:
    return {
        "max_new_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "stop": list(params.stop),
    }


# -------------------------------------------------------------------------------------------------
# the worker process


def _worker_main(conn, spec_dict: dict, path: str, kind: str) -> None:
    """Own one ``vllm.LLM``; answer (op, args) messages with ("ok", result) or ("err", exc)."""
    # Its own process group: if it must be killed, vLLM's engine processes go with it (by group id).
    os.setsid()
    try:
        worker = _Worker(EngineSpec(**spec_dict), path, kind)
        dtype = str(getattr(worker.llm.llm_engine.model_config, "dtype", "")).removeprefix("torch.")
        conn.send(("ok", {"max_model_len": worker.max_model_len, "dtype": dtype or None}))
    except BaseException as exc:  # report why start-up failed, then exit
        conn.send(("err", _portable(exc)))
        return
    while True:
        try:
            op, args = conn.recv()
        except EOFError:  # the parent is gone
            return
        if op == "close":
            worker.shutdown()
            return
        try:
            conn.send(("ok", getattr(worker, op)(*args)))
        except BaseException as exc:
            conn.send(("err", _portable(exc)))


def _portable(exc: BaseException) -> BaseException | str:
    """EngineErrors travel as they are; anything else as its traceback text (vLLM's own exception
    classes may not unpickle cleanly on the other side)."""
    if isinstance(exc, EngineError):
        return exc
    return "".join(traceback.format_exception(exc))


class _Worker:
    def __init__(self, spec: EngineSpec, path: str, kind: str):
        from vllm import LLM

        kwargs: dict[str, Any] = dict(spec.vllm_args)
        kwargs.update(
            model=path,
            dtype=spec.dtype,
            tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            trust_remote_code=spec.trust_remote_code,
            seed=0,
        )
        if spec.max_model_len:
            kwargs["max_model_len"] = spec.max_model_len
        if kind == "reward":
            kwargs["runner"] = "pooling"
        self.llm = LLM(**kwargs)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        gen_eos = getattr(self.llm.llm_engine.model_config.hf_config, "eos_token_id", None)
        self.model_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []

    def shutdown(self) -> None:
        # vLLM's engine-core process outlives the LLM object unless told; a spawned worker then
        # waits for it forever on exit.
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()

    def generate(
        self, ids: list[list[int]], seeds: list[int], params: dict, stop_ids: list[int]
    ) -> list[dict]:
        from vllm import SamplingParams, TokensPrompt

        greedy = params["temperature"] <= 0.0
        sps = [
            SamplingParams(
                n=1,
                max_tokens=params["max_new_tokens"],
                temperature=0.0 if greedy else params["temperature"],
                top_p=1.0 if greedy else params["top_p"],
                # Per-request seed from (seed, prompt): the same sample in any batch, and prompts
                # do not share one random stream.
                seed=None if greedy else seed,
                stop=params["stop"] or None,
                stop_token_ids=sorted(set(stop_ids) | set(self.model_eos)),
                skip_special_tokens=True,
            )
            for seed in seeds
        ]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], sps, use_tqdm=False)
        rows = []
        for x, out in zip(ids, outs, strict=True):
            c = out.outputs[0]
            meta: dict = {}
            if isinstance(c.stop_reason, str):
                meta["stop"] = c.stop_reason
            if c.finish_reason not in ("stop", "length"):
                meta["finish_reason_raw"] = c.finish_reason
            rows.append(
                {
                    "text": c.text,
                    "prompt_tokens": len(x),
                    "completion_tokens": len(c.token_ids),
                    "finish_reason": "length" if c.finish_reason == "length" else "stop",
                    "meta": meta,
                }
            )
        return rows

    def prompt_logprobs(self, seqs: list[list[int]]) -> list[list[float]]:
        """log p(token t | tokens < t) for t >= 1 of each sequence (index 0: nan)."""
        from vllm import SamplingParams, TokensPrompt

        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], sp, use_tqdm=False)
        rows = []
        for s, out in zip(seqs, outs, strict=True):
            plp = out.prompt_logprobs
            row = [math.nan]
            for t in range(1, len(s)):
                row.append(float(plp[t][s[t]].logprob))
            rows.append(row)
        return rows

    def reward(self, seqs: list[list[int]]) -> list[float]:
        from vllm import PoolingParams, TokensPrompt

        outs = self.llm.classify(
            [TokensPrompt(prompt_token_ids=s) for s in seqs],
            pooling_params=PoolingParams(use_activation=False),  # the raw logit, as transformers gives
            use_tqdm=False,
        )
        return [float(o.outputs.probs[0]) for o in outs]
