"""``reglab report``: the HTML report of a sweep (U-curve of loss against strength)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from reglab.cli._app import app, fail


@app.command("report")
def report_command(
    path: Optional[Path] = typer.Argument(None, help="A sweep folder (holding sweep.json / sweep.db) written by `reglab sweep`."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Database URL of the study (instead of PATH)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (with --storage; default: the one in PATH/sweep.json)."),
    x: Optional[str] = typer.Option(None, "--x", help="Swept parameter on the horizontal axis (default: the recipe's strength)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default PATH/report.html or report.html)."),
) -> None:
    """Write the report of a sweep: train and validation loss against regularization strength, best value marked."""
    from reglab.report.sweep import write_sweep_report
    from reglab.sweep import load_sweep

    if path is None and storage is None:
        fail("give a sweep folder PATH or --storage URL --study NAME")
    meta = {}
    if path is not None:
        if not path.is_dir():
            fail(f"PATH must be a sweep folder; received PATH={str(path)!r}")
        if (path / "sweep.json").exists():
            meta = json.loads((path / "sweep.json").read_text())
        if storage is None:
            if not (path / "sweep.db").exists():
                fail(f"no sweep.db in {str(path)!r}; pass --storage URL for a database study")
            storage = f"sqlite:///{(path / 'sweep.db').resolve()}"
    study = study or meta.get("study")
    if study is None:
        from optuna.study import get_all_study_names

        names = get_all_study_names(storage)
        if len(names) != 1:
            fail(f"--study is needed: the storage holds studies {names}")
        study = names[0]
    try:
        result = load_sweep(storage, study)
        target = out or ((path / "report.html") if path is not None else Path("report.html"))
        written = write_sweep_report(result, target, x=x)
    except (ValueError, KeyError) as exc:
        fail(str(exc).strip("'\""))
    typer.echo(f"report: {written}")
