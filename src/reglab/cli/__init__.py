"""Command-line interface: ``reglab COMMAND --help`` explains each command.

Usage errors (bad option values, unknown names) print one line starting with ``Error:`` and
exit with status 2.
"""

from __future__ import annotations

import sys

import click

from reglab.cli._app import app

# Command modules register themselves on ``app`` when imported; one line per module.
from reglab.cli import _demo  # noqa: F401,E402

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reglab`` console script."""
    try:
        app(args=argv, prog_name="reglab", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print("Aborted.", file=sys.stderr)
        return 1
    except click.ClickException as exc:
        message = " ".join(exc.format_message().split())
        print(f"Error: {message}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
