"""``reglab lint RECIPE:SETTING``: regularization pitfalls in a recipe's model, optimizer and loss."""

from __future__ import annotations

import json

import typer

from reglab.cli._app import app, fail

_RECIPES = ("digits",)


@app.command("lint")
def lint_command(
    target: str = typer.Argument(..., help="RECIPE:SETTING, e.g. digits:weight_decay (recipes: digits)."),
    seed: int = typer.Option(0, "--seed", help="Seed used to build the model."),
    as_json: bool = typer.Option(False, "--json", help="Print findings as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 on warnings too (not only errors)."),
) -> None:
    """Lint a recipe setting's model, optimizer and loss; exit status 1 if an error is found."""
    recipe, sep, setting = target.partition(":")
    if not sep or not setting:
        fail(f"TARGET must look like RECIPE:SETTING (e.g. digits:weight_decay); received target={target!r}")
    if recipe not in _RECIPES:
        fail(f"unknown recipe {recipe!r} in target={target!r}; choose from {', '.join(_RECIPES)}")
    from reglab.recipes import digits

    if setting not in digits.SETTINGS:
        fail(f"unknown setting {setting!r} in target={target!r}; choose from {', '.join(digits.SETTINGS)}")
    from reglab.linting import lint

    model, optimizer, loss_fn, example = digits.build(setting, seed, None)
    findings = lint(model, optimizer, loss_fn, example)
    if as_json:
        typer.echo(json.dumps({"target": target, "findings": [f.to_dict() for f in findings]}, indent=1))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console()
        if not findings:
            console.print(f"{escape(target)}: no findings")
        else:
            table = Table(title=f"lint {escape(target)}")
            for col in ("severity", "id", "message", "fix"):
                table.add_column(col)
            for f in findings:
                table.add_row(f.severity, f.id, escape(f.message), escape(f.fix))
            console.print(table)
    bad = {"error", "warning"} if strict else {"error"}
    if any(f.severity in bad for f in findings):
        raise typer.Exit(code=1)
