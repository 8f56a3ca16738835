"""A token bucket for asyncio: at most `rate` acquisitions per second, `burst` at once.

Hosted APIs limit requests per minute per key; a client that stays under the limit never sees the
429s, and so never wastes the retries (and the backoff sleeps) that overshooting costs.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`await bucket.acquire()` returns when a request may start.

    Tokens refill continuously at `rate` per second up to `burst`. With the default burst of 1
    requests are evenly spaced (never more than `rate` in any window of 1/rate seconds or longer);
    a larger burst lets that many start together after an idle spell. Waiters are served in
    arrival order (the lock), so no request starves.
    """

    def __init__(self, rate: float, burst: int = 1):
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = float(rate)
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock: asyncio.Lock | None = None  # created on first use, inside the running loop

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1.0
