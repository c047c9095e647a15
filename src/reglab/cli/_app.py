"""The typer application every command module registers on."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

app = typer.Typer(
    name="reglab",
    help="Regularize neural-network training and measure generalization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> NoReturn:
    """Stop a command with a one-line ``Error: ...`` on stderr and exit status 2 (bad usage)."""
    print("Error: " + " ".join(str(message).split()), file=sys.stderr)
    raise typer.Exit(code=2)


@app.callback()
def _root() -> None:
    """Regularize neural-network training and measure generalization.

    Run `reglab COMMAND --help` for the options of each command.
    """
