"""math-verify in a pool of worker processes, each item under its own time limit (the reasons are
in `persyn.scoring.answers`): a worker that overruns is killed and replaced, and the item comes
back "timeout". Inside a daemonic process, which may not start children, math-verify's own alarm
is used (main thread only)."""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import os
import threading
from concurrent.futures import TimeoutError as FutureTimeout


def _verify_in_worker(gold: str, answer: str) -> str:
    """Runs in a pool worker: 'equal', 'not equal', 'answer unparsed' or 'reference unparsed'.
    math-verify's own alarms are off (the pool enforces the limit by killing the worker)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return _verify(parse, verify, gold, answer, None)


def _verify(parse, verify, gold: str, answer: str, limit: int | None) -> str:
    g = parse(gold, parsing_timeout=limit, raise_on_error=limit is not None)
    if not g:
        return "reference unparsed"
    p = parse(answer, parsing_timeout=limit, raise_on_error=limit is not None)
    if not p:
        return "answer unparsed"
    return "equal" if verify(g, p, timeout_seconds=limit, raise_on_error=limit is not None) else "not equal"


def _verify_here(gold: str, answer: str, timeout_s: float) -> str:
    """In this process, with math-verify's own SIGALRM limit (for daemonic processes only)."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "math answer checks need a time limit: run them from a non-daemonic process (which can "
            "start the checking pool) or from a daemonic process's main thread"
        )
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        return _verify(parse, verify, gold, answer, max(1, math.ceil(timeout_s)))
    except TimeoutException:
        return "timeout"
    except Exception as exc:  # math-verify raising on an input it cannot handle
        return f"error: {type(exc).__name__}"


class _Pool:
    """One pebble ProcessPool per process, started on first use, stopped at exit."""

    lock = threading.Lock()
    pool = None
    pid = -1

    @classmethod
    def get(cls):
        from pebble import ProcessPool

        with cls.lock:
            if cls.pool is None or cls.pid != os.getpid():  # a forked child cannot use its parent's
                workers = max(1, min(4, os.cpu_count() or 1))
                cls.pool = ProcessPool(max_workers=workers, context=multiprocessing.get_context("spawn"))
                cls.pid = os.getpid()
            return cls.pool

    @classmethod
    def stop(cls) -> None:
        with cls.lock:
            if cls.pool is not None and cls.pid == os.getpid():
                cls.pool.stop()
                cls.pool.join()
            cls.pool = None


atexit.register(_Pool.stop)


def run_math(items: list[tuple[str, str]], timeout_s: float) -> list[str]:
    """math-verify on (gold, answer) pairs, each under its own time limit: results in order."""
    if not items:
        return []
    if multiprocessing.current_process().daemon:
        return [_verify_here(g, a, timeout_s) for g, a in items]
    pool = _Pool.get()
    futures = [pool.schedule(_verify_in_worker, args=item, timeout=timeout_s) for item in items]
    out = []
    for f in futures:
        try:
            out.append(f.result())
        except FutureTimeout:
            out.append("timeout")
        except Exception as exc:  # an input math-verify chokes on, or a worker that died
            out.append(f"error: {type(exc).__name__}")
    return out
