"""``reglab diagnose HISTORY``: the fit regime of a run from its saved learning curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer

from reglab.cli._app import app, fail


@app.command("diagnose")
def diagnose_command(
    history: Path = typer.Argument(..., help="History file: reglab CSV/JSON, Lightning metrics.csv, or Keras history JSON."),
    baseline: Optional[float] = typer.Option(None, "--baseline", help="Loss of a trivial predictor (> 0)."),
    classes: Optional[int] = typer.Option(None, "--classes", help="K balanced classes: baseline = ln K (>= 2)."),
    train_col: Optional[str] = typer.Option(None, "--train-col", help="Column of the training loss."),
    val_col: Optional[str] = typer.Option(None, "--val-col", help="Column of the validation loss."),
    as_json: bool = typer.Option(False, "--json", help="Print the diagnosis as JSON instead of a table."),
) -> None:
    """Tell whether a run underfits, fits well or overfits, with the evidence and advice."""
    from reglab.diagnosis import diagnose, read_curves

    if not history.is_file():
        fail(f"HISTORY must be an existing file; received history={str(history)!r}")
    if baseline is not None and classes is not None:
        fail(f"give --baseline or --classes, not both; received baseline={baseline!r}, classes={classes!r}")
    if classes is not None:
        if classes < 2:
            fail(f"--classes must be >= 2; received classes={classes!r}")
        baseline = math.log(classes)
    if baseline is not None and not (baseline > 0 and math.isfinite(baseline)):
        fail(f"--baseline must be a finite number > 0; received baseline={baseline!r}")
    try:
        curves = read_curves(history, train_key=train_col, val_key=val_col)
        result = diagnose(
            curves["train_loss"],
            curves["val_loss"],
            baseline_loss=baseline,
            train_metric=curves["train_metric"],
            val_metric=curves["val_metric"],
        )
    except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as err:
        fail(f"cannot diagnose history={str(history)!r}: {err}")
    if as_json:
        typer.echo(json.dumps({"file": str(history), "columns": [curves["train_key"], curves["val_key"]], **result.to_dict()}, indent=1))
        return

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(history.name)}: {curves['train_key']} vs {curves['val_key']}")
    table.add_column("evidence")
    table.add_column("value", justify="right")
    for key, value in result.evidence.items():
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, list):
            text = ", ".join(map(str, value)) or "none"
        else:
            text = str(value)
        table.add_row(escape(key), escape(text))
    console = Console()
    console.print(table)
    console.print(f"[bold]verdict: {result.regime}[/bold] (rule {result.rule})")
    for line in result.advice:
        console.print(f"- {escape(line)}")
    for line in result.assumptions:
        console.print(f"[dim]assumed: {escape(line)}[/dim]")
