"""``reglab repro``: rerun textbook and paper results and write a report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from reglab.cli._app import THREADS_HELP, app, fail, set_threads


@app.command("repro")
def repro(
    name: Optional[str] = typer.Argument(None, help="Reproduction to run (see --list); omit with --all."),
    all_: bool = typer.Option(False, "--all", help="Run every reproduction into one report."),
    out: Path = typer.Option(Path("runs/repro"), "--out", "-o", help="Folder for report.html and results.json."),
    fast: bool = typer.Option(False, "--fast", help="The shortened versions the test suite runs."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per setting (default: each recipe's own)."),
    list_: bool = typer.Option(False, "--list", help="List the reproductions and exit."),
    threads: int = typer.Option(1, "--threads", help=THREADS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary table."),
) -> None:
    """Reproduce a regularization result (or --all) and write OUT/report.html and OUT/results.json.

    Each reproduction puts the published number beside ours, checks the claims with explicit
    thresholds and diagnoses the run. Exit status 1 when a claim does not hold.
    """
    from reglab.recipes._repro import available, run_repro, save_results
    from reglab.report.repro import write_repro_report

    recipes = available()
    if list_:
        for recipe in recipes.values():
            typer.echo(f"{recipe.name:20s} {recipe.title}")
        return
    if all_ and name is not None:
        fail(f"give a NAME or --all, not both; received name={name!r} and --all")
    if not all_ and name is None:
        fail(f"give a NAME or --all; available: {', '.join(recipes)}")
    if name is not None and name not in recipes:
        fail(f"unknown reproduction name={name!r}; choose from {', '.join(recipes)}")
    if seeds is not None and seeds < 1:
        fail(f"--seeds must be >= 1; received seeds={seeds}")
    set_threads(threads)
    names = list(recipes) if all_ else [name]
    console = Console(stderr=True, quiet=quiet)
    results = []
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for n in names:
            task = progress.add_task(n, total=None)

            def update(completed: int, total: int, description: str, task=task, n=n) -> None:
                progress.update(task, completed=completed, total=total, description=f"{n}: {description}")

            start = time.perf_counter()
            results.append(run_repro(n, fast=fast, seeds=seeds, progress=update))
            progress.update(task, description=f"{n}: done in {time.perf_counter() - start:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    save_results(results, out / "results.json")
    report = write_repro_report(results, out / "report.html")
    if not quiet:
        summary = Table(title="reproductions" + (" (fast)" if fast else ""))
        for col in ("reproduction", "claims", "verdict", "seconds"):
            summary.add_column(col, justify="right" if col in ("claims", "seconds") else "left")
        for r in results:
            held = sum(c.passed for c in r.checks)
            summary.add_row(r.name, f"{held}/{len(r.checks)}", "reproduced" if r.passed else "NOT reproduced", f"{r.seconds:.0f}")
        Console().print(summary)
        for r in results:
            for c in r.failed_checks():
                Console().print(f"[red]✘[/red] {escape(r.name)}: {escape(c.claim)} — {escape(c.measured)}")
    typer.echo(f"report: {report}")
    if not all(r.passed for r in results):
        raise typer.Exit(code=1)
