"""``reglab demo``: the default experiment (noisy digits under several regularizers)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reglab.cli._app import THREADS_HELP, app, fail, set_threads

_SETTINGS_HELP = (
    "Comma-separated settings to compare (default: none, l2, weight_decay, dropout, "
    "label_smoothing, early_stopping, combined; also available: augmentation)."
)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for report.html, results.json and histories."),
    settings: Optional[str] = typer.Option(None, "--settings", "-s", help=_SETTINGS_HELP),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds per setting (>= 1)."),
    noise: float = typer.Option(0.2, "--noise", help="Fraction of training/validation labels flipped, in [0, 1)."),
    epochs: int = typer.Option(100, "--epochs", help="Maximum epochs per run."),
    n_train: int = typer.Option(400, "--n-train", help="Training examples (out of 1797 digits)."),
    threads: int = typer.Option(1, "--threads", help=THREADS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no table."),
) -> None:
    """Train one MLP on noisy digits under several regularization settings and write an HTML report.

    The unregularized network memorizes the flipped labels; each setting (coupled L2, decoupled
    weight decay, dropout, label smoothing, early stopping, a combination) is trained with the same
    data and seeds. Writes OUT/report.html, OUT/results.json and one history CSV per run.
    """
    from reglab.recipes.digits import DemoConfig, run
    from reglab.report.demo import write_demo_report

    chosen = tuple(s.strip() for s in settings.split(",") if s.strip()) if settings is not None else None
    try:
        config = DemoConfig(
            **({"settings": chosen} if chosen is not None else {}),
            seeds=seeds,
            noise=noise,
            epochs=epochs,
            n_train=n_train,
        ).validate()
    except ValueError as exc:
        fail(str(exc))
    set_threads(threads)
    console = Console(stderr=True, quiet=quiet)
    total_runs = len(config.settings) * config.seeds
    start = time.perf_counter()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("training", total=total_runs * config.epochs)
        done = {"runs": 0}

        def on_epoch() -> None:
            progress.advance(task)

        def on_run(result) -> None:
            done["runs"] += 1
            progress.update(
                task,
                completed=done["runs"] * config.epochs,
                description=f"{result.setting} seed {result.seed}",
            )

        result = run(config, on_epoch=on_epoch, on_run=on_run)
    elapsed = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    hist_dir = out / "histories"
    hist_dir.mkdir(exist_ok=True)
    for name, runs in result.runs.items():
        for r in runs:
            r.history.save(hist_dir / f"{name}-seed{r.seed}.csv")
    summary = result.summary()
    (out / "results.json").write_text(json.dumps({"config": result.config_dict(), "summary": summary}, indent=1))
    report = write_demo_report(result, out / "report.html", elapsed=elapsed)
    if not quiet:
        table = Table(title=f"noisy digits, {config.seeds} seed(s), {elapsed:.0f} s")
        for col in ("setting", "test acc", "gap", "train loss", "epochs"):
            table.add_column(col, justify="left" if col == "setting" else "right")
        for row in summary:
            table.add_row(
                row["setting"],
                f"{100 * row['test_acc']:.1f} ± {100 * row['test_acc_std']:.1f}",
                f"{row['gap']:.2f}",
                f"{row['train_loss']:.3f}",
                f"{row['epochs_run']:.0f}",
            )
        Console().print(table)
    typer.echo(f"report: {report}")
