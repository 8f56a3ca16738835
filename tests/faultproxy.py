"""A real HTTP/1.1 proxy that misbehaves on purpose, for testing clients against flaky servers.

It listens on 127.0.0.1 (a free port), forwards each request to the upstream server and, for a
configurable share of requests chosen by a seeded RNG, instead:

* ``error``: answers 500 without forwarding;
* ``throttle``: answers 429 with ``Retry-After`` (seconds) without forwarding;
* ``drop``: forwards the request (the server does the work) and then closes the client connection
  without an answer, as a dying load balancer does;
* ``reset``: closes the connection before forwarding anything;
* ``delay``: waits ``delay_s`` before forwarding (a slow server; with a client timeout below it, a
  timeout).

``arrivals`` records when each request arrived (for rate checks).

Runs its own asyncio loop in a daemon thread; use as a context manager. ``counts`` tells how many
requests got each treatment ("ok" for clean forwards), so a test can check the client's own
retry statistics against what really happened on the wire.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

FAULTS = ("error", "throttle", "drop", "reset", "delay")


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        error: float = 0.0,
        throttle: float = 0.0,
        drop: float = 0.0,
        reset: float = 0.0,
        delay: float = 0.0,
        delay_s: float = 1.0,
        retry_after: str = "0",
        seed: int = 0,
    ):
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        self.up_host, self.up_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.rates = {"error": error, "throttle": throttle, "drop": drop, "reset": reset, "delay": delay}
        if sum(self.rates.values()) > 1.0:
            raise ValueError("fault rates add up to more than 1")
        self.delay_s = delay_s
        self.retry_after = retry_after
        self._rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.arrivals: list[float] = []  # time.monotonic() of each request's arrival
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:  # connections still open (keep-alive, a delayed forward)
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> int:
        """Requests that got a fault instead of a clean answer (a 502 for an unreachable upstream
        counts too; such a request is also in counts["ok"])."""
        return sum(self.counts[k] for k in FAULTS) + self.counts["upstream_error"]

    @property
    def requests(self) -> int:
        return sum(self.counts[k] for k in (*FAULTS, "ok"))

    # --- the proxy ----------------------------------------------------------------------------------

    def _choose(self) -> str:
        with self._lock:
            x = self._rng.random()
            for name in FAULTS:
                x -= self.rates[name]
                if x < 0:
                    self.counts[name] += 1
                    return name
            self.counts["ok"] += 1
            return "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one client connection carries many requests
                request = await _read_request(reader)
                if request is None:
                    return
                self.arrivals.append(time.monotonic())
                fate = self._choose()
                if fate == "reset":
                    return
                if fate == "error":
                    writer.write(_response(500, b'{"error": "injected fault"}'))
                    await writer.drain()
                    continue
                if fate == "throttle":
                    writer.write(_response(429, b'{"error": "slow down"}', {"Retry-After": self.retry_after}))
                    await writer.drain()
                    continue
                if fate == "delay":
                    await asyncio.sleep(self.delay_s)
                try:
                    reply = await self._forward(request)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    self.counts["upstream_error"] += 1
                    reply = _response(502, f'{{"error": "upstream: {type(exc).__name__}"}}'.encode())
                if fate == "drop":
                    return  # the server did the work; the answer is lost
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()  # on cancellation (stop) too

    async def _forward(self, request: bytes) -> bytes:
        up_reader, up_writer = await asyncio.open_connection(self.up_host, self.up_port)
        try:
            up_writer.write(request)
            await up_writer.drain()
            head = await up_reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(up_reader)
            elif "content-length" in headers:
                body = await up_reader.readexactly(int(headers["content-length"]))
            else:
                body = await up_reader.read()
            keep = [
                ln
                for ln in lines[1:]
                if ln
                and ln.split(":", 1)[0].strip().lower()
                not in ("connection", "transfer-encoding", "content-length", "keep-alive")
            ]
            out = [lines[0], *keep, f"content-length: {len(body)}"]
            return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body
        finally:
            up_writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One whole request, rewritten to close the upstream connection after it; None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    keep = []
    for line in lines[1:]:
        if not line:
            continue
        name = line.split(":", 1)[0].strip().lower()
        if name == "content-length":
            length = int(line.split(":", 1)[1])
        if name in ("connection", "keep-alive"):
            continue
        keep.append(line)
    body = await reader.readexactly(length) if length else b""
    return ("\r\n".join([lines[0], *keep, "connection: close"]) + "\r\n\r\n").encode("latin-1") + body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    reason = {500: "Internal Server Error", 429: "Too Many Requests", 502: "Bad Gateway"}.get(status, "Error")
    lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
