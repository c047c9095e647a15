"""HTML report of ``reglab demo``: curves, results table and one paragraph per technique."""

from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from reglab.recipes.digits import SETTINGS, DemoResult, RunResult
from reglab.report.html import esc, figure, page, paragraph, pyplot, section, table, write_page

__all__ = ["demo_report_html", "write_demo_report"]


def _curves(runs: list[RunResult], key: str) -> np.ndarray:
    """Seeds × epochs array; runs stopped early are padded with NaN."""
    length = max(len(r.history) for r in runs)
    out = np.full((len(runs), length), np.nan)
    for i, r in enumerate(runs):
        values = r.history[key]
        out[i, : len(values)] = values
    return out


def _loss_curves_figure(result: DemoResult):
    plt = pyplot()
    names = list(result.runs)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        runs = result.runs[name]
        for key, color, label in (("train_loss", "#2f6fde", "train"), ("val_loss", "#d9480f", "validation")):
            curves = _curves(runs, key)
            epochs = np.arange(1, curves.shape[1] + 1)
            with np.errstate(all="ignore"):
                mean = np.nanmean(curves, axis=0)
            ax.plot(epochs, mean, color=color, lw=1.6, label=label)
            ax.fill_between(epochs, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=color, alpha=0.15, lw=0)
        for r in runs:
            if r.epochs_run < result.config.epochs:
                ax.axvline(r.best_epoch, color="#555", lw=0.8, ls=":")
        ax.set_title(SETTINGS[name].title, fontsize=9.5)
        ax.set_yscale("log")
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7.5)
        ax.grid(alpha=0.25, which="both")
    axes.flat[0].set_ylabel("cross-entropy (noisy labels)", fontsize=8)
    axes.flat[0].legend(fontsize=7.5, loc="lower left")
    fig.tight_layout()
    return fig


def _accuracy_figure(result: DemoResult, rows: list[dict[str, Any]]):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 0.9))
    titles = [r["title"] for r in rows][::-1]
    means = [100 * r["test_acc"] for r in rows][::-1]
    stds = [100 * r["test_acc_std"] for r in rows][::-1]
    y = np.arange(len(rows))
    ax.barh(y, means, xerr=stds, color="#8fb3ef", edgecolor="#2f6fde", capsize=3)
    for runs_y, name in zip(y, [r["setting"] for r in rows][::-1]):
        accs = [100 * run.test_acc for run in result.runs[name]]
        ax.scatter(accs, [runs_y] * len(accs), color="#1d2330", s=9, zorder=3)
    ax.set_yticks(y, titles, fontsize=8.5)
    lo = min(m - s for m, s in zip(means, stds))
    ax.set_xlim(max(0.0, lo - 5), 100)
    ax.set_xlabel("test accuracy on clean labels (%)  -  bar: mean ± std, dots: seeds", fontsize=8.5)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _showed(row: dict[str, Any], base: dict[str, Any] | None) -> str:
    """One plain-language sentence of what the run measured for this setting."""
    acc = f"Mean test accuracy {_pct(row['test_acc'])} ± {100 * row['test_acc_std']:.1f} points"
    gap = f"final gap between validation and training loss {row['gap']:.2f}"
    if base is None or base is row:
        text = (
            f"{acc}; training loss fell to {row['train_loss']:.3f} while validation loss ended at "
            f"{row['val_loss']:.2f}, a {gap.split(' ', 1)[1]}"
        )
        if row["gap"] > 1.0:
            text += ": the network memorized the noisy training labels."
        else:
            text += "."
        return text
    delta = 100 * (row["test_acc"] - base["test_acc"])
    direction = "better than" if delta > 0 else "worse than" if delta < 0 else "the same as"
    text = (
        f"{acc}, {abs(delta):.1f} points {direction} no regularization; {gap} "
        f"(vs {base['gap']:.2f} without)."
    )
    if row["epochs_run"] < base["epochs_run"]:
        text += f" Training stopped after {row['epochs_run']:.0f} epochs on average."
    return text


def demo_report_html(result: DemoResult, *, elapsed: float | None = None) -> str:
    """The complete report as an HTML string."""
    rows = result.summary()
    base = next((r for r in rows if r["setting"] == "none"), None)
    best = max(range(len(rows)), key=lambda i: rows[i]["test_acc"])
    cfg = result.config
    intro = paragraph(
        f"An MLP (64-{cfg.hidden}-{cfg.hidden}-10) is trained on {cfg.n_train} of scikit-learn's 8x8 "
        f"digits with {_pct(cfg.noise)} of the training and validation labels flipped to a wrong class "
        f"(symmetric noise), for {cfg.epochs} epochs of Adam (lr {cfg.lr:g}, batch {cfg.batch_size}), "
        f"over {cfg.seeds} seed(s). Every setting sees the same data, noise and initial weights for a "
        "given seed. Test accuracy is measured on clean labels, on the model each setting ends with "
        "(for early stopping, the restored best weights)."
    )
    headers = ["Setting", "Test accuracy", "Gap (val - train loss)", "Train loss", "Val loss", "Epochs"]
    body_rows = [
        [
            r["title"],
            f"{_pct(r['test_acc'])} ± {100 * r['test_acc_std']:.1f}",
            f"{r['gap']:.3f} ± {r['gap_std']:.3f}",
            f"{r['train_loss']:.3f}",
            f"{r['val_loss']:.3f}",
            f"{r['epochs_run']:.0f}",
        ]
        for r in rows
    ]
    results = section(
        "Results",
        table(headers, body_rows, numeric=range(1, 6), highlight=[best]),
        paragraph(
            "Mean ± standard deviation over seeds. Losses are cross-entropy in evaluation mode on the "
            "noisy labels the model was given; the gap is validation minus training loss of the final "
            "model. The highlighted row has the best mean test accuracy."
        ),
        figure(_accuracy_figure(result, rows), "Test accuracy per setting", "Test accuracy per setting."),
        id="results",
    )
    curves = section(
        "Training and validation loss",
        figure(
            _loss_curves_figure(result),
            "Training and validation loss curves per setting",
            "Mean over seeds (line) and range (band), log scale. Dotted lines: epochs restored by early stopping.",
        ),
        id="curves",
    )
    techniques = []
    for r in rows:
        s = SETTINGS[r["setting"]]
        techniques.append(
            section(
                s.title,
                f"<p>{esc(s.explanation)}</p>",
                f'<p><span class="formula">{esc(s.formula)}</span></p>',
                f"<p><strong>What this run showed.</strong> {esc(_showed(r, base))}</p>",
                level=3,
                id=f"technique-{s.name}",
            )
        )
    explain = section("What each technique does", *techniques, id="techniques")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    took = f" in {elapsed:.0f} s" if elapsed is not None else ""
    footer = f"reglab demo, {stamp}{took}, Python {platform.python_version()}."
    return page(
        "Regularization on noisy digits",
        intro + results + curves + explain,
        subtitle="What weight decay, dropout, label smoothing and early stopping do to a network that can memorize noise.",
        footer=footer,
    )


def write_demo_report(result: DemoResult, path: str | Path, *, elapsed: float | None = None) -> Path:
    """Write the report to ``path`` (parent folders are created) and return the path."""
    return write_page(path, demo_report_html(result, elapsed=elapsed))
