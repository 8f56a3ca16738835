"""Progress display: one rich bar per unit of long work (a teacher's generations, a scorer's
batch of responses), with count, rate and ETA; plus one-line messages.

    ui = Progress(console)                  # or Progress(None) for silence
    with ui.task("calibrate · qwen", total=64) as advance:
        advance(8)                          # after each batch
    ui.say("calibrate qwen: 40 done earlier, 24 to do")

Everything goes to stderr by default, so `--json` output on stdout stays clean.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second (or per minute when slow), from rich's own speed estimate."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed and task.elapsed:  # rich's estimate needs several updates; a short task has few
            speed = task.completed / task.elapsed
        if not speed:
            return Text("   - /s", style="progress.data.speed")
        if speed < 1:
            return Text(f"{speed * 60:5.1f}/min", style="progress.data.speed")
        return Text(f"{speed:6.1f}/s", style="progress.data.speed")


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


class Progress:
    """A thin layer over rich: `task()` bars and `say()` lines; `Progress(None)` is silent."""

    def __init__(self, console: Console | None, *, transient: bool = False):
        self.console = console
        self.transient = transient

    @property
    def enabled(self) -> bool:
        return self.console is not None

    def say(self, message: str, style: str | None = None) -> None:
        if self.console is not None:
            self.console.print(message, style=style, soft_wrap=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A bar for `total` items; yields `advance(n)`."""
        if self.console is None or total == 0:
            yield lambda n=1: None
            return
        bar = RichProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=self.transient,
        )
        with bar:
            tid = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(tid, n)


def silence_libraries(*, datasets: bool = False, warnings: bool = False) -> Callable[[], None]:
    """Turn off transformers' (and with `datasets`, the datasets library's) own progress bars, and
    with `warnings` transformers' warnings: our bars cover that work, theirs would garble ours.
    Returns the function that puts back what was changed. `datasets` is opt-in because importing
    it costs a second; only the stages that write datasets need it."""
    from transformers.utils import logging as hf_logging

    restore: list[Callable[[], None]] = []
    if hf_logging.is_progress_bar_enabled():
        hf_logging.disable_progress_bar()
        restore.append(hf_logging.enable_progress_bar)
    if warnings:
        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        restore.append(lambda: hf_logging.set_verbosity(level))
    if datasets:
        import datasets as ds

        if ds.is_progress_bar_enabled():
            ds.disable_progress_bars()
            restore.append(ds.enable_progress_bars)

    def undo() -> None:
        for step in reversed(restore):
            step()

    return undo


@contextlib.contextmanager
def quiet_libraries(*, datasets: bool = False) -> Iterator[None]:
    """`silence_libraries` for the duration of the block."""
    undo = silence_libraries(datasets=datasets)
    try:
        yield
    finally:
        undo()
