"""Command-line interface: ``reglab COMMAND --help`` explains each command.

Usage errors (bad option values, unknown names) print one line starting with ``Error:`` and
exit with status 2.
"""

from __future__ import annotations

import sys

import typer

from reglab.cli._app import app


def _register_commands() -> None:
    """Import every command module (``reglab/cli/_*.py``); each registers itself on ``app``."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") and info.name != "_app":
            importlib.import_module(f"{__name__}.{info.name}")


_register_commands()

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reglab`` console script."""
    try:
        result = app(args=argv, prog_name="reglab", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        return 1
    except typer.TyperException as exc:
        message = exc.format_message()
        if type(exc).__name__ != "NoArgsIsHelpError":  # help text keeps its lines
            message = "Error: " + " ".join(message.split())
        print(message, file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
