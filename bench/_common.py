"""Shared timing helpers for the benchmarks (median of repeats after warm-up)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch


def median_time(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def write_section(title: str, body: str, *, path: str | os.PathLike | None = None) -> None:
    """Replace the body of section ``## title`` in BENCHMARKS.md with ``body`` (other sections kept)."""
    from pathlib import Path

    target = Path(path) if path is not None else Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
    text = target.read_text()
    header = f"## {title}\n"
    if header not in text:
        text = text.rstrip("\n") + f"\n\n{header}\n_Not measured yet._\n"
    start = text.index(header) + len(header)
    nxt = text.find("\n## ", start)
    end = len(text) if nxt == -1 else nxt + 1
    text = text[:start] + "\n" + body.strip("\n") + "\n\n" + text[end:].lstrip("\n")
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip("\n") + "\n")
    os.replace(tmp, target)
