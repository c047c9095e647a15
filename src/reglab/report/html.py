"""Building blocks of reglab's self-contained HTML reports.

Every report is one file: styles inline, figures embedded as base64 ``data:`` images (SVG from
matplotlib), no script and no network access needed to view it. Every piece of text that reaches
the HTML goes through :func:`esc`; figures are embedded as images, never as inline markup.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["esc", "figure", "page", "paragraph", "pyplot", "section", "table", "write_page"]

_CSS = """
:root { --fg: #1d2330; --muted: #5b6474; --line: #d9dee7; --accent: #2f6fde; --bg-alt: #f5f7fb; }
* { box-sizing: border-box; }
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       max-width: 1080px; margin: 2rem auto; padding: 0 1.25rem; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .3rem; }
p.subtitle { color: var(--muted); margin-top: 0; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid var(--line); text-align: left; }
th { background: var(--bg-alt); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.best td { background: #eaf6ec; }
figure { margin: 1rem 0; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .3rem; }
code, .formula { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .92em;
                 background: var(--bg-alt); padding: .05rem .3rem; border-radius: 3px; }
.verdict { display: inline-block; padding: .05rem .45rem; border-radius: 3px; font-size: .85rem; }
.verdict.overfitting { background: #fde8e6; color: #9b1c13; }
.verdict.underfitting { background: #fff4d6; color: #7a5200; }
.verdict.good_fit { background: #e3f4e6; color: #1d6b2c; }
.verdict.insufficient_data { background: var(--bg-alt); color: var(--muted); }
footer { color: var(--muted); font-size: .85rem; margin-top: 3rem; border-top: 1px solid var(--line); padding-top: .6rem; }
"""


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``, quotes included."""
    return html.escape(str(value), quote=True)


def paragraph(text: str, cls: str | None = None) -> str:
    klass = f' class="{esc(cls)}"' if cls else ""
    return f"<p{klass}>{esc(text)}</p>"


def section(title: str, *parts: str, level: int = 2, id: str | None = None) -> str:
    """A heading followed by already-built HTML parts."""
    anchor = f' id="{esc(id)}"' if id else ""
    return f"<section{anchor}><h{level}>{esc(title)}</h{level}>" + "".join(parts) + "</section>"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    numeric: Iterable[int] = (),
    highlight: Iterable[int] = (),
    cls: str = "results",
) -> str:
    """A table of escaped cells; ``numeric`` column indices are right-aligned, ``highlight`` rows marked."""
    numeric, highlight = set(numeric), set(highlight)

    def cell(tag: str, i: int, value: Any) -> str:
        klass = ' class="num"' if i in numeric else ""
        return f"<{tag}{klass}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        klass = ' class="best"' if r in highlight else ""
        body.append(f"<tr{klass}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend (reports never open a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_page(path: str | os.PathLike, html_text: str) -> Path:
    """Write a report atomically (temporary file, then rename; parent folders created).

    A reader never sees a half-written report, and a failure leaves the previous one in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def figure(fig: Any, alt: str, caption: str | None = None) -> str:
    """Embed a matplotlib figure as a base64 SVG image (and close it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/svg+xml;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


def page(title: str, body: str, *, subtitle: str | None = None, footer: str | None = None) -> str:
    """A complete HTML document around already-built ``body`` parts."""
    sub = paragraph(subtitle, "subtitle") if subtitle else ""
    foot = f"<footer>{esc(footer)}</footer>" if footer else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{esc(title)}</h1>{sub}{body}{foot}</body></html>\n"
    )
