"""The typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="reglab",
    help="Regularize neural-network training and measure generalization.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> None:
    """Stop a command with a one-line error and exit status 2 (bad usage)."""
    raise typer.BadParameter(message)


@app.callback()
def _root() -> None:
    """Regularize neural-network training and measure generalization.

    Run `reglab COMMAND --help` for the options of each command.
    """
