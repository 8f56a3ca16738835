"""The `persyn` command line. Commands stay thin: they parse, call the pipeline, print."""

from __future__ import annotations

import typer

from persyn.router.cli import router_app

app = typer.Typer(
    name="persyn",
    help="Build a distillation dataset personalised to one student from a pool of teachers "
    "(PerSyn: calibrate, score, train a router, route, generate).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


app.add_typer(router_app, name="router")


@app.callback()
def _root() -> None:
    """Keep `persyn` a command group even while it has a single command."""


@app.command()
def zoo() -> None:
    """List the offline model zoo: each alias, whether its package is installed and converted."""
    from persyn.zoo import print_zoo

    print_zoo()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
