"""HTML report of a sweep: the classic U-curve of loss against regularization strength.

Training and validation loss of every complete trial are drawn against the swept strength (log
axis when the range is log-scaled), the best value is marked, and the two sides of the curve are
labelled: less regularization than the best is the *overfitting* side (small training loss,
large gap), more is the *underfitting* side (both losses high). Each trial's own curves are
classified with :func:`reglab.diagnosis.diagnose` when that module is available, and the report
says how many trials on each side it found overfitting or underfitting.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from reglab.report.html import figure, page, paragraph, pyplot, section, table, write_page

__all__ = ["regimes", "sweep_report_html", "write_sweep_report"]


def regimes(rows: list[dict[str, Any]]) -> dict[int, str]:
    """``trial number -> regime`` from ``reglab.diagnose`` on each trial's per-epoch curves.

    Trials whose curves are too short, or all trials when ``reglab.diagnose`` cannot be imported,
    get no entry.
    """
    try:
        from reglab.diagnosis import diagnose
    except Exception:  # the diagnosis module is optional for a sweep report
        return {}
    out: dict[int, str] = {}
    for r in rows:
        curve = r.get("curve") or []
        train = [c[1] for c in curve]
        val = [c[2] for c in curve]
        if len(curve) < 2:
            continue
        try:
            out[r["number"]] = str(diagnose(train, val).regime)
        except Exception:  # a curve diagnose cannot read is simply not labelled
            continue
    return out


def _axis(result: Any, x: str) -> tuple[str, bool]:
    log = any(p.startswith(f"{x}=") and ("log:" in p) for p in result.params)
    return x, log


def sweep_report_html(result: Any, *, x: str | None = None) -> str:
    """The report of a :class:`reglab.sweep.SweepResult` as one self-contained HTML string.

    Args:
        result: the sweep (from :func:`reglab.sweep.sweep` or :func:`reglab.sweep.load_sweep`).
        x: the parameter on the horizontal axis (default: the recipe's strength parameter).

    Raises:
        ValueError: if ``x`` is not a swept parameter.
    """
    plt = pyplot()
    names = [p.split("=", 1)[0] for p in result.params]
    x = x or (result.strength if result.strength in names else names[0])
    if x not in names:
        raise ValueError(f"x must be one of the swept parameters {names}; received x={x!r}")
    _, log = _axis(result, x)
    rows = result.trials()
    done = [r for r in rows if r["state"] == "COMPLETE" and isinstance(r["params"].get(x), (int, float))]
    done.sort(key=lambda r: r["params"][x])
    labels = regimes(done)
    minimize = result.direction == "minimize"
    best = None
    if done:
        best = (min if minimize else max)(done, key=lambda r: r["value"])
    parts: list[str] = []
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    parts.append(
        paragraph(
            f"Recipe {result.recipe}, metric {result.metric} ({result.direction}), "
            f"search space {'; '.join(result.params)}; trials: {summary}."
        )
    )
    if best is not None:
        best_x = best["params"][x]
        parts.append(
            paragraph(f"Best {x} = {best_x:.4g} with {result.metric} = {best['value']:.4g} (trial {best['number']}).")
        )
        fig, ax = plt.subplots(figsize=(8, 4.5))
        xs = [r["params"][x] for r in done]
        tr = [r["train_loss"] if r["train_loss"] is not None else math.nan for r in done]
        va = [r["val_loss"] if r["val_loss"] is not None else math.nan for r in done]
        ax.plot(xs, tr, "o-", color="#2f6fde", label="train loss (eval mode)")
        ax.plot(xs, va, "s-", color="#d9480f", label="validation loss")
        ax.axvline(best_x, color="#1d6b2c", linestyle="--", linewidth=1.2, label=f"best {x} = {best_x:.3g}")
        if log:
            ax.set_xscale("log")
        positive = [v for v in tr + va if v == v and v > 0]
        if positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        ax.set_xlabel(f"{x} (regularization strength{', log scale' if log else ''})")
        ax.set_ylabel("loss")
        lo, hi = min(xs), max(xs)
        if lo < best_x:
            ax.text(0.02, 0.96, "← overfitting side", transform=ax.transAxes, va="top", color="#9b1c13")
        if hi > best_x:
            ax.text(0.98, 0.96, "underfitting side →", transform=ax.transAxes, va="top", ha="right", color="#7a5200")
        ax.legend(loc="lower left" if minimize else "upper left", fontsize=9)
        ax.grid(alpha=0.3)
        parts.append(
            section(
                "Loss against regularization strength",
                figure(fig, f"U-curve of train and validation loss against {x}",
                       f"Complete trials only. Left of the best {x}: the overfitting side (too little "
                       "regularization: low training loss, large gap); right: the underfitting side (too much: "
                       "both losses high)."),
            )
        )
        left = [r for r in done if r["params"][x] < best_x]
        right = [r for r in done if r["params"][x] > best_x]
        if labels:
            lines = []
            for side, group, word in (("less", left, "overfitting"), ("more", right, "underfitting")):
                n = sum(1 for r in group if labels.get(r["number"]) == word)
                lines.append(f"{n} of {len(group)} trials with {side} regularization than the best diagnosed {word}")
            parts.append(paragraph("reglab.diagnose on each trial's curves: " + "; ".join(lines) + "."))
    headers = ["trial", x, *[n for n in names if n != x], "state", result.metric, "train loss", "val loss", "epochs", "regime"]
    table_rows, highlight = [], []
    ordered = done + [r for r in rows if r not in done]
    for i, r in enumerate(ordered):
        if best is not None and r["number"] == best["number"]:
            highlight.append(i)

        def fmt(v: Any) -> str:
            return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

        side = ""
        if best is not None and r in done:
            side = labels.get(r["number"], "")
        table_rows.append(
            [r["number"], fmt(r["params"].get(x)), *[fmt(r["params"].get(n)) for n in names if n != x], r["state"].lower(),
             fmt(r["value"]), fmt(r["train_loss"]), fmt(r["val_loss"]), r["epochs"], side]
        )
    parts.append(section("Trials", table(headers, table_rows, numeric=range(1, len(headers) - 2), highlight=highlight)))
    parts.append(
        section(
            "Where the numbers come from",
            paragraph(
                f"Study {result.study.study_name} in {result.to_dict()['storage']}. Pruned trials stopped at an "
                "epoch boundary because their validation value was worse than the median of earlier trials "
                "at that epoch; failed trials (a killed worker) were re-run with the same parameters."
            ),
        )
    )
    return page(f"Sweep: {result.recipe}", "".join(parts), subtitle=f"{len(done)} complete trials")


def write_sweep_report(result: Any, path: str | Path, *, x: str | None = None) -> Path:
    """Write :func:`sweep_report_html` to ``path`` atomically (parent folders created); return the path."""
    return write_page(path, sweep_report_html(result, x=x))
