"""What every `persyn` command shares: the consoles, how a pipeline is opened, how a user error
is shown, and the options spelt out per command."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

FORCE_HELP = (
    "Use this run directory although its config changed: the manifest takes the new config and "
    "every row whose content key still matches is reused (a new student recomputes only "
    "learnability, the router and the routes; a new teacher or generation setting only that "
    "teacher's responses). Without it a different config is refused."
)
RETRY_HELP = "Try failed generations and scores again (they are otherwise kept as failed)."
SKIP_HELP = (
    "Skip malformed prompt rows (listed in <run>/prompts/bad_rows.jsonl) instead of refusing the file."
)
SET_HELP = "Override a config key, e.g. --set calibration.size=64 --set teachers.0.batch_size=4."


def _fail(message: str, code: int = 2) -> None:
    _err.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code)


def _quiet_libraries() -> None:
    """Our bars show progress; the libraries' own (weight loading, dataset saving) would garble them."""
    import os

    from persyn.util.progress import silence_libraries

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    silence_libraries(datasets=True, warnings=True)


def _pipeline(
    config: Path, *, force=False, retry_failed=False, skip_bad_rows=False, overrides=(), quiet=False
):
    from persyn.config import parse_overrides
    from persyn.pipeline import Pipeline

    _quiet_libraries()
    return Pipeline.from_config(
        config,
        force=force,
        retry_failed=retry_failed,
        skip_bad_rows=True if skip_bad_rows else None,
        overrides=parse_overrides(list(overrides)) or None,
        progress=not quiet,
    )


def _report_error(exc: BaseException) -> None:
    from persyn.store import ConfigMismatchError

    msg = str(exc)
    if isinstance(exc, ConfigMismatchError):
        msg += "\n  (persyn: pass --force to reuse this run directory, or set output.dir to a new one)"
    _fail(msg)


# Common options (typer needs them spelt out per command).
_CONFIG = typer.Argument(..., exists=False, help="The run config (YAML); `persyn init` writes one.")
