"""``reglab demo``: the default experiment (noisy digits under several regularizers)."""

from __future__ import annotations

from reglab.cli._app import app


@app.command()
def demo() -> None:
    """Train one MLP on noisy digits under several regularization settings and write a report."""
    raise NotImplementedError("the demo is being built")
