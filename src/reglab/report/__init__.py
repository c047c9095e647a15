"""Self-contained HTML reports (one file, no network needed to view it)."""

from reglab.report.html import esc, figure, page, paragraph, section, table

__all__ = ["esc", "figure", "page", "paragraph", "section", "table"]
