"""The `persyn` command line: `commands` (every stage, run, plan, status, demo...) and `router`
(`persyn router train|eval` on score files you bring)."""

from persyn.cli.commands import app, main

__all__ = ["app", "main"]
