"""Throughput of the HTTP engine against a plain asyncio/httpx client, on the same server.

Starts `vllm serve` (from .venv-vllm, `make vllm-env`) on a zoo model, then sends the same greedy
chat requests at the same concurrency through (a) a plain client: httpx.AsyncClient + a semaphore,
nothing else, and (b) OpenAIEngine.generate. Runs alternate in ABBA order after one warm-up run of
each, so drift in the machine's speed hits both alike; reports medians and the
ratio engine/plain (goal: >= 0.95, i.e. the engine's retries, rate limiter, bookkeeping and
background loop cost at most 5% of what the server can do).

    .venv/bin/python benchmarks/http.py [--prompts 24] [--tokens 32] [--concurrency 8] [--rounds 4]
    .venv/bin/python benchmarks/http.py --base-url http://host:8000/v1 --served-model-name NAME
    .venv/bin/python benchmarks/http.py --overhead     # client cost alone, against a canned server

`--overhead` replaces vLLM by a server (another process) that answers every request after 20 ms
with a fixed body, at high concurrency: then the clients, not the model, are the bottleneck, and
the ratio shows what the engine's own machinery costs per request.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py: running it puts its folder first on sys.path, where it would shadow
# the standard library's `http` package (which httpx imports). Take that entry out first.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "tests"))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402

from persyn.engines import EngineSpec, GenerationParams  # noqa: E402
from persyn.engines.openai_engine import OpenAIEngine  # noqa: E402

TOPICS = [
    "the sea",
    "a city at night",
    "prime numbers",
    "coffee",
    "a long journey",
    "autumn",
    "robots",
    "bread",
]


def make_prompts(n: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} (variant {i})." for i in range(n)]


async def plain_run(base_url: str, name: str, prompts: list[str], tokens: int, concurrency: int) -> int:
    """The baseline: what any minimal client would do. Returns completion tokens."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(p: str) -> int:
            async with sem:
                r = await client.post(
                    base_url + "/chat/completions",
                    json={
                        "model": name,
                        "messages": [{"role": "user", "content": p}],
                        "max_tokens": tokens,
                        "temperature": 0.0,
                    },
                )
                r.raise_for_status()
                return r.json()["usage"]["completion_tokens"]

        return sum(await asyncio.gather(*(one(p) for p in prompts)))


# Run with `python -c` in a child process. Written for brevity, not as an HTTP server to copy.
CANNED_SERVER = """
import asyncio, json, sys
BODY = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                   "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 2}})
BODY = BODY.encode()
HEAD = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n"
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\\r\\n\\r\\n")
            lines = head.lower().split(b"\\r\\n")
            n = next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length:")), 0)
            await r.readexactly(n)
            await asyncio.sleep(0.02)
            w.write(HEAD % len(BODY) + BODY)
            await w.drain()
    except Exception:
        w.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


class CannedServer:
    """A trivial OpenAI-shaped server in its own process (so it does not share the clients' GIL)."""

    def __init__(self) -> None:
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-c", CANNED_SERVER, str(self.port)])
        for _ in range(100):
            try:
                httpx.post(f"http://127.0.0.1:{self.port}/v1/chat/completions", json={}, timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("canned server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def compare(base_url: str, name: str, model: str, prompts: list[str], tokens: int, conc: int, rounds: int):
    spec = EngineSpec(
        model=model, engine="openai", base_url=base_url, served_model_name=name, max_concurrency=conc
    )
    engine = OpenAIEngine(spec)
    params = GenerationParams(max_new_tokens=tokens)

    def run_plain() -> tuple[float, int]:
        t0 = time.perf_counter()
        n = asyncio.run(plain_run(base_url, name, prompts, tokens, conc))
        return time.perf_counter() - t0, n

    def run_engine() -> tuple[float, int]:
        t0 = time.perf_counter()
        n = sum(g.completion_tokens for g in engine.generate(prompts, params))
        return time.perf_counter() - t0, n

    run_plain(), run_engine()  # warm-up: prefix cache, connections, lazy imports
    plain, ours = [], []
    for r in range(rounds):
        pair = [("plain", run_plain, plain), ("engine", run_engine, ours)]
        for label, fn, sink in pair if r % 2 == 0 else pair[::-1]:  # ABBA: no order bias
            secs, toks = fn()
            sink.append(toks / secs)
            print(f"round {r + 1} {label:6s}: {secs:6.2f} s, {toks} tokens, {toks / secs:7.1f} tok/s")
    engine.close()
    p, e = statistics.median(plain), statistics.median(ours)
    print(f"\n{len(prompts)} prompts x {tokens} tokens, concurrency {conc}, {rounds} alternating rounds")
    print(f"median plain client : {p:7.1f} tok/s")
    print(f"median OpenAIEngine : {e:7.1f} tok/s")
    paired = statistics.median(b / a for a, b in zip(plain, ours, strict=True))
    print(f"ratio engine/plain  : {e / p:.3f}  (goal >= 0.95); median of per-round ratios {paired:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="zoo:smollm2-135m-instruct")
    ap.add_argument("--base-url", help="use a running server instead of starting one")
    ap.add_argument("--served-model-name")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--overhead", action="store_true", help="a canned server instead of vLLM")
    args = ap.parse_args()

    if args.overhead:
        canned = CannedServer()
        try:
            print("canned server (20 ms per request): the clients are the bottleneck")
            compare(
                f"http://127.0.0.1:{canned.port}/v1",
                "canned",
                "canned",
                make_prompts(2000),
                2,
                64,
                args.rounds,
            )
        finally:
            canned.stop()
        return

    server = None
    if args.base_url:
        base_url, name = args.base_url.rstrip("/"), args.served_model_name or args.model
    else:
        from servers import SERVED_NAME, VLLMServer, vllm_env_problem

        from persyn.zoo import resolve_model

        problem = vllm_env_problem()
        if problem:
            sys.exit(f"no vLLM environment: {problem}")
        server = VLLMServer(resolve_model(args.model), log_path=Path("/tmp/persyn-bench-http-serve.log"))
        server.start()
        print(f"vllm serve up in {server.startup_s:.1f} s (log: {server.log_path})")
        base_url, name = server.base_url, SERVED_NAME
    try:
        model = args.model if args.base_url is None else "bench"
        compare(base_url, name, model, make_prompts(args.prompts), args.tokens, args.concurrency, args.rounds)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
