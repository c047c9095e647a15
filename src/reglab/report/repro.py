"""HTML report of ``reglab repro``: one section per reproduction, readable from top to bottom.

Each section says what was reproduced and from where, how it was run, the published numbers
beside ours, every claim with a pass/fail verdict, the plots and tables, and the diagnosis.
The page is one self-contained file built from :mod:`reglab.report.html` (figures are base64
SVG images; every text goes through :func:`~reglab.report.html.esc`).
"""

from __future__ import annotations

import math
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from reglab.recipes._repro import Plot, ReproResult
from reglab.report.html import esc, figure, page, paragraph, pyplot, section, table, write_page

__all__ = ["plot_figure", "repro_report_html", "repro_section_html", "write_repro_report"]

_COLORS = ("#2f6fde", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#e67700", "#1098ad", "#495057")


def plot_figure(plot: Plot):
    """Draw a :class:`~reglab.recipes._repro.Plot` with matplotlib and return the figure."""
    plt = pyplot()
    if plot.kind == "heatmap":
        import numpy as np

        matrix = np.array(plot.matrix, dtype=float)
        fig, ax = plt.subplots(figsize=(8.0, 4.6))
        image = ax.imshow(matrix, cmap="viridis", aspect="auto", origin="lower")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_xticks(range(len(plot.x_ticks)), plot.x_ticks, fontsize=8.5)
        ax.set_yticks(range(len(plot.y_ticks)), plot.y_ticks, fontsize=8.5)
        best = np.nanargmin(matrix, axis=1) if np.isfinite(matrix).any() else []
        for row, col in enumerate(best):  # the best cell of each row gets a white frame
            ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="white", lw=2.2))
        for (r, c), value in np.ndenumerate(matrix):
            if math.isfinite(value):
                ax.text(c, r, f"{value:.3g}", ha="center", va="center", fontsize=8, color="white")
    elif plot.kind == "bar":
        fig, ax = plt.subplots(figsize=(8.0, 3.8))
        labels = list(plot.series)
        means = [plot.series[k][0] for k in labels]
        stds = [plot.series[k][1] if len(plot.series[k]) > 1 else 0.0 for k in labels]
        ax.bar(range(len(labels)), means, yerr=stds, color=_COLORS[: len(labels)] or None, capsize=3)
        ax.set_xticks(range(len(labels)), labels, fontsize=8.5, rotation=15, ha="right")
    else:
        fig, ax = plt.subplots(figsize=(8.0, 3.8))
        for i, (label, (xs, ys)) in enumerate(plot.series.items()):
            ys = [math.nan if y is None else y for y in ys]
            ax.plot(xs, ys, color=_COLORS[i % len(_COLORS)], lw=1.5, label=label)
        if plot.log_x:
            ax.set_xscale("log")
        if plot.log_y:
            ax.set_yscale("log")
    for i, (label, y) in enumerate(plot.hlines.items()):
        ax.axhline(y, color="#555", lw=0.9, ls=("--", ":", "-.")[i % 3], label=label)
    if plot.kind == "line" or plot.hlines:
        ax.legend(fontsize=8, frameon=False)
    ax.set_title(plot.title, fontsize=11)
    ax.set_xlabel(plot.x_label, fontsize=9.5)
    ax.set_ylabel(plot.y_label, fontsize=9.5)
    ax.tick_params(labelsize=8.5)
    fig.tight_layout()
    return fig


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return value


def repro_section_html(result: ReproResult, *, level: int = 2) -> str:
    """One reproduction as an HTML ``<section>`` (heading, setup, numbers, checks, plots, diagnosis)."""
    verdict = "reproduced" if result.passed else "not reproduced"
    klass = "good_fit" if result.passed else "overfitting"
    status = (
        f'<p><span class="verdict {klass}">{esc(verdict)}</span> '
        f"{esc(sum(c.passed for c in result.checks))} of {esc(len(result.checks))} claims hold"
        f"{esc(' (fast version)' if result.fast else '')}, {esc(f'{result.seconds:.0f}')} s</p>"
    )
    parts = [
        status,
        paragraph(f"Source: {result.source}.", "subtitle"),
        paragraph(result.setup),
    ]
    if result.published:
        parts.append(section("Published and ours", table(["quantity", "published", "this run"], result.published), level=level + 1))
    if result.checks:
        rows = [["✔ holds" if c.passed else "✘ fails", c.claim, c.measured] for c in result.checks]
        highlight = [i for i, c in enumerate(result.checks) if c.passed]
        parts.append(section("Claims checked", table(["verdict", "claim", "measured"], rows, highlight=highlight), level=level + 1))
    if result.diagnosis:
        parts.append(section("Diagnosis", paragraph(result.diagnosis), level=level + 1))
    figures = [figure(plot_figure(p), alt=p.title, caption=p.caption or None) for p in result.plots]
    if figures:
        parts.append(section("Plots", *figures, level=level + 1))
    for t in result.tables:
        body = table(t.headers, [[_cell(v) for v in row] for row in t.rows])
        parts.append(section(t.title, body, paragraph(t.note) if t.note else "", level=level + 1))
    return section(result.title, *parts, level=level, id=f"repro-{result.name}")


def repro_report_html(results: Sequence[ReproResult], *, title: str | None = None) -> str:
    """The whole page: a summary table with links, then one section per result, in order."""
    if not results:
        raise ValueError("results must hold at least one ReproResult; received an empty sequence")
    title = title or ("reglab reproductions" if len(results) > 1 else f"Reproduction: {results[0].title}")
    summary_rows = [
        [r.title, "yes" if r.passed else "no", f"{sum(c.passed for c in r.checks)}/{len(r.checks)}", f"{r.seconds:.0f}"]
        for r in results
    ]
    links = "".join(f'<li><a href="#repro-{esc(r.name)}">{esc(r.title)}</a></li>' for r in results)
    intro = paragraph(
        "Each section reruns a textbook or paper experiment on data that ships offline (synthetic, or "
        "scikit-learn's digits), puts the published number beside ours, checks the paper's claims with "
        "explicit thresholds, and says what the run shows."
    )
    overview = section(
        "Overview",
        intro,
        table(["reproduction", "all claims hold", "claims", "seconds"], summary_rows, numeric=(3,),
              highlight=[i for i, r in enumerate(results) if r.passed]),
        f"<ol>{links}</ol>",
    )
    body = overview + "".join(repro_section_html(r) for r in results)
    fast = any(r.fast for r in results)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer = f"reglab repro{' --fast' if fast else ''} · {stamp} · Python {platform.python_version()} on {platform.machine()}"
    subtitle = "Shortened (fast) versions" if fast else "Full versions"
    return page(title, body, subtitle=subtitle, footer=footer)


def write_repro_report(results: Sequence[ReproResult], path: str | Path, *, title: str | None = None) -> Path:
    """Write :func:`repro_report_html` to ``path`` atomically (parent folders created); return the path."""
    return write_page(path, repro_report_html(results, title=title))
