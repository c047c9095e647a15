"""``reglab sweep``: tune regularization strength of a recipe with Optuna."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from reglab.cli._app import THREADS_HELP, app, fail, set_threads


@app.command("sweep")
def sweep_command(
    recipe: str = typer.Argument(..., help="Recipe to sweep: regression (D2L 3.7) or digits (the demo MLP)."),
    param: List[str] = typer.Option(
        [], "--param", "-p", help="Search space entry, repeatable: weight_decay=log:1e-5..1, dropout=0..0.6, patience=int:3..20, x=a,b,c."
    ),
    trials: int = typer.Option(20, "--trials", "-n", help="Finished trials the study must hold (shared by all workers)."),
    storage: Optional[str] = typer.Option(
        None, "--storage", help="Database URL; default sqlite:///OUT/sweep.db. Use postgresql://user:pw@host/db to share one study across workers."
    ),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: the recipe name)."),
    out: Path = typer.Option(Path("runs/sweep"), "--out", "-o", help="Folder for sweep.db (default storage), sweep.json and report.html."),
    metric: str = typer.Option("val_loss", "--metric", help="Epoch column to optimize: val_loss (default) or val_acc."),
    direction: Optional[str] = typer.Option(None, "--direction", help="minimize or maximize (default: maximize for *acc metrics)."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (Optuna's default) or random."),
    pruner: str = typer.Option("median", "--pruner", help="median, hyperband or none: prune hopeless trials at epoch boundaries."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampler seed (give each worker a different one)."),
    backend: str = typer.Option("sequential", "--backend", help="sequential, or batched (BATCH trials trained at once in one process)."),
    batch: int = typer.Option(8, "--batch", help="Trials per round with --backend batched."),
    config: List[str] = typer.Option([], "--set", help="Recipe configuration KEY=VALUE, repeatable (e.g. epochs=50)."),
    heartbeat: int = typer.Option(10, "--heartbeat", help="Seconds between heartbeats of a running trial."),
    grace: int = typer.Option(30, "--grace", help="Seconds without heartbeat before a trial is failed and re-queued."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write OUT/report.html at the end."),
    threads: int = typer.Option(1, "--threads", help=THREADS_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result line."),
) -> None:
    """Run an Optuna study over regularization strength; several processes with one --storage and --study share it.

    Each trial trains the recipe with sampled strengths and is scored by the validation metric; trials
    worse than the median at an epoch boundary are pruned. With a PostgreSQL --storage, start the same
    command on several machines: the --trials budget is shared and exact, and trials of killed workers
    are re-run (heartbeat every --heartbeat s, failed after --grace s).
    """
    import optuna

    from reglab.sweep import RECIPES, parse_param, sweep

    if recipe not in RECIPES:
        fail(f"unknown recipe {recipe!r}; choose from {', '.join(sorted(RECIPES))}")
    set_threads(threads)
    if not param:
        fail(f"give at least one --param, e.g. --param {RECIPES[recipe].strength}=log:1e-5..1")
    try:
        specs = [parse_param(p) for p in param]
    except ValueError as exc:
        fail(f"--param: {exc}")
    overrides = {}
    for item in config:
        if "=" not in item:
            fail(f"--set must be KEY=VALUE; received --set {item!r}")
        key, _, value = item.partition("=")
        overrides[key.strip()] = value.strip()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def on_trial(t) -> None:
        if not quiet:
            value = "" if t.value is None else f" {metric}={t.value:.4g}"
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
            typer.echo(f"trial {t.number}: {t.state.name.lower()}{value} ({params})", err=True)

    try:
        result = sweep(
            recipe,
            specs,
            trials=trials,
            storage=storage,
            study=study,
            out=out,
            metric=metric,
            direction=direction,
            config=overrides,
            sampler=sampler,
            pruner=pruner,
            seed=seed,
            backend=backend,
            batch=batch,
            heartbeat_interval=heartbeat,
            grace_period=grace,
            on_trial=on_trial,
        )
    except ValueError as exc:
        fail(str(exc))
    best = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    typer.echo(f"best: {best} ({metric}={result.best_value:.4g}); study {result.study.study_name!r}")
    if report:
        from reglab.report.sweep import write_sweep_report

        typer.echo(f"report: {write_sweep_report(result, Path(out) / 'report.html')}")
