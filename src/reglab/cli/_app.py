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


THREADS_HELP = (
    "torch CPU threads (>= 1). The default 1 is fastest for the small models of the recipes: "
    "their matrix products are too small to split, and extra threads competing for busy cores "
    "spin instead of working."
)


def set_threads(threads: int) -> None:
    """Validate ``--threads`` (one-line error, exit 2) and apply it with ``torch.set_num_threads``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        fail(f"threads must be an int >= 1; received threads={threads!r}")
    import torch

    torch.set_num_threads(threads)


@app.callback()
def _root() -> None:
    """Regularize neural-network training and measure generalization.

    Run `reglab COMMAND --help` for the options of each command.
    """
