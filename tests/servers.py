"""Start a real `vllm serve` (OpenAI-compatible server) from the separate vLLM environment.

vLLM lives in its own virtual environment (``.venv-vllm``, built by ``make vllm-env``) because it
pins torch and transformers versions of its own. ``VLLM_PYTHON`` overrides where its Python is.

The server runs on 127.0.0.1 on a free port, in float32 with eager execution (torch.compile would
add ~2 minutes of start-up on this 2-core CPU and buys nothing for a few test requests), with a
fixed KV-cache size (on CPU, vLLM otherwise reserves 90% of RAM). Its log goes to a file whose tail
is shown when start-up fails.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SERVED_NAME = "persyn-test"


def vllm_python() -> Path:
    return Path(os.environ.get("VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")


@functools.cache
def vllm_env_problem() -> str | None:
    """Why the vLLM environment cannot be used, or None when it can (checked once: ~10 s)."""
    py = vllm_python()
    if not py.exists():
        return f"{py} does not exist; build it with `make vllm-env`"
    probe = subprocess.run(
        [str(py), "-c", "import vllm, persyn"], capture_output=True, text=True, timeout=120
    )
    if probe.returncode != 0:
        return f"{py} cannot import vllm and persyn (rebuild with `make vllm-env`):\n{probe.stderr[-2000:]}"
    return None


def require_vllm_env() -> None:
    """Skip without the vLLM environment; fail in CI, where `make test` builds it."""
    import pytest

    problem = vllm_env_problem()
    if problem:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no vLLM environment: {problem}")


def cpu_env(threads: int | None = None) -> dict[str, str]:
    """Environment for vLLM's CPU build on a small machine."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache instead of 90% of RAM
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # use every core for the model (2 here)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """One `vllm serve` process; `start()` returns once /health answers 200."""

    def __init__(self, model_path: str, *, log_path: Path, max_model_len: int = 2048, extra: tuple = ()):
        self.model_path = model_path
        self.log_path = Path(log_path)
        self.port = free_port()
        self.args = [
            str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server",
            "--model", model_path,
            "--served-model-name", SERVED_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32",
            "--max-model-len", str(max_model_len),
            "--enforce-eager",
            "--seed", "0",
            *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 420.0) -> VLLMServer:
        t0 = time.monotonic()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # Its own session, so stop() can end the server and the engine processes it spawns.
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=cpu_env(), start_new_session=True
        )
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.root_url + "/health", timeout=2).status_code == 200:
                    self.startup_s = time.monotonic() - t0
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vllm serve did not answer /health within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: the server and its children
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.proc = None
        self._log.close()


def build_tiny_reward_model(out: Path, tokenizer_from: str) -> Path:
    """A randomly initialised LlamaForSequenceClassification (one output: a reward model) with a
    real tokenizer and chat template. head_dim 64: vLLM's CPU attention rejects tiny head sizes."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_from)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=0.2,  # large enough that different inputs get clearly different scores
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


if __name__ == "__main__":  # manual use: python tests/servers.py MODEL_DIR
    server = VLLMServer(sys.argv[1], log_path=Path("/tmp/persyn-vllm-serve.log")).start()
    print(f"up in {server.startup_s:.1f} s at {server.base_url}; Ctrl-C stops it", flush=True)
    try:
        signal.pause()
    finally:
        server.stop()
