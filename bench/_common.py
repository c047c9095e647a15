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
