"""math-verify in worker processes, each item under its own time limit (the reasons are in
`persyn.scoring.answers`): a worker that overruns is killed and replaced, and the item comes back
"timeout".

The caller's script is never imported again, so a plain script without an
``if __name__ == "__main__":`` guard can check answers. `multiprocessing`'s ``spawn`` and
``forkserver`` children both re-run the parent's main file before they work (that is how they find
its functions), and ``fork`` copies a parent that may hold torch's threads and locks. So the
parent starts one helper with `subprocess` (``python -c``: no main file to re-run) and talks to it
over its stdin/stdout; the helper owns a pebble ProcessPool started with ``forkserver`` (its
server preloads math-verify, so workers start in milliseconds, forked from a single-threaded
process). The helper exits when its stdin closes, also when the parent is killed. Subprocesses,
unlike `multiprocessing` children, may be started from a daemonic process too, so every caller
takes this one path.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import subprocess
import sys
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

_HELPER_CODE = "from persyn.scoring.math_pool import _serve; _serve()"


def _verify_in_worker(gold: str, answer: str) -> str:
    """Runs in a pool worker: 'equal', 'not equal', 'answer unparsed' or 'reference unparsed'.
    math-verify's own alarms are off (the pool enforces the limit by killing the worker)."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    g = parse(gold, parsing_timeout=None, raise_on_error=False)
    if not g:
        return "reference unparsed"
    p = parse(answer, parsing_timeout=None, raise_on_error=False)
    if not p:
        return "answer unparsed"
    return "equal" if verify(g, p, timeout_seconds=None, raise_on_error=False) else "not equal"


def _serve() -> None:
    """The helper's loop: read (items, timeout_s) from stdin, write the results to stdout."""
    import multiprocessing

    from pebble import ProcessPool

    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print (math-verify, sympy) goes to stderr, never into the replies
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["math_verify", __name__])
    pool = ProcessPool(max_workers=max(1, min(4, os.cpu_count() or 1)), context=ctx)
    try:
        while True:
            try:
                items, timeout_s = pickle.load(requests)
            except EOFError:  # the parent closed the pipe or exited
                break
            futures = [pool.schedule(_verify_in_worker, args=item, timeout=timeout_s) for item in items]
            out = []
            for f in futures:
                try:
                    out.append(f.result())
                except FutureTimeout:
                    out.append("timeout")
                except Exception as exc:  # an input math-verify chokes on, or a worker that died
                    out.append(f"error: {type(exc).__name__}")
            pickle.dump(out, replies)
            replies.flush()
    finally:
        pool.stop()
        pool.join()


class _Helper:
    """One helper process per parent process, started on first use, stopped at exit."""

    lock = threading.Lock()
    proc: subprocess.Popen | None = None
    pid = -1

    @classmethod
    def _start(cls) -> subprocess.Popen:
        if cls.proc is not None and cls.pid == os.getpid() and cls.proc.poll() is None:
            return cls.proc
        if cls.pid == os.getpid():
            cls._stop()  # it died: start a new one
        # A forked child must not use its parent's pipes: it gets a helper of its own.
        root = str(Path(__file__).resolve().parents[2])  # the folder that holds the persyn package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        cls.proc = subprocess.Popen(
            [sys.executable, "-c", _HELPER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal interrupts the caller, not the helper
        )
        cls.pid = os.getpid()
        return cls.proc

    @classmethod
    def run(cls, items: list[tuple[str, str]], timeout_s: float) -> list[str]:
        with cls.lock:
            for attempt in range(2):
                proc = cls._start()
                try:
                    pickle.dump((items, timeout_s), proc.stdin)
                    proc.stdin.flush()
                    out = pickle.load(proc.stdout)
                    if len(out) == len(items):
                        return out
                except (OSError, EOFError, pickle.UnpicklingError):
                    pass
                cls._stop()
                if attempt:
                    raise RuntimeError(
                        "the math-verify helper process exited while checking answers; "
                        "its error output is above"
                    )
        raise AssertionError("unreachable")

    @classmethod
    def _stop(cls) -> None:
        proc, cls.proc = cls.proc, None
        if proc is None or cls.pid != os.getpid():
            return
        try:
            proc.stdin.close()  # the helper reads EOF, stops its pool and exits
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            proc.stdout.close()

    @classmethod
    def stop(cls) -> None:
        with cls.lock:
            cls._stop()


atexit.register(_Helper.stop)


def run_math(items: list[tuple[str, str]], timeout_s: float) -> list[str]:
    """math-verify on (gold, answer) pairs, each under its own time limit: results in order."""
    if not items:
        return []
    return _Helper.run(list(items), float(timeout_s))
