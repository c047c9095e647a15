"""Overhead of reglab's training monitors at the default interval, CPU.

Workload: an MLP 64 → 256 → LayerNorm → ReLU → 256 → ReLU → 10 (83 k parameters, one
scale-invariant weight, two ReLUs) trained with Adam on scikit-learn's digits, batch 64, through
``reglab.fit``. Baseline: the same epochs with no callback. Candidate: every monitor of
``reglab.monitors.default_monitors`` (weight norm, update ratio, bf16 lost updates, sparsity,
effective lr, dead ReLU) at the default interval (``every=100``), and, for scale, at ``every=1``.
Runs are interleaved so load drifts hit them alike; the table gives median seconds per step.
Target: overhead at the default interval ≤ 3 % of step time.

Run: ``.venv/bin/python bench/bench_monitors.py`` (add ``--no-write`` to only print).
"""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_section  # noqa: E402

from reglab.data import TensorLoader, load_digits  # noqa: E402
from reglab.loop import fit  # noqa: E402
from reglab.monitors import DEFAULT_EVERY, default_monitors  # noqa: E402

EPOCHS = 8  # 8 epochs x 16 steps = 128 steps per timed run


def make():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 256), nn.LayerNorm(256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def main(write: bool = True) -> str:
    torch.set_num_threads(1)
    data = load_digits(n_train=1000, n_val=300, seed=0)
    loader = TensorLoader(data.train.x, data.train.y, batch_size=64, shuffle=True, seed=0)
    steps = EPOCHS * len(loader)

    def run(every: int | None) -> float:
        model, opt = make()
        cbs = [] if every is None else default_monitors(model, every=every)
        t0 = time.perf_counter()
        fit(model, loader, optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=EPOCHS, callbacks=cbs)
        return (time.perf_counter() - t0) / steps

    cases = {"no monitors (baseline)": None, f"default_monitors(every={DEFAULT_EVERY})": DEFAULT_EVERY,
             "default_monitors(every=1)": 1}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for every in cases.values():
        run(every)  # warm-up
    for _ in range(7):
        for name, every in cases.items():
            times[name].append(run(every))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["no monitors (baseline)"]
    rows = ["| run | ms / step | vs baseline |", "|---|---:|---:|"]
    for name, t in med.items():
        rows.append(f"| {name} | {1e3 * t:.3f} | {t / base:.3f}x ({100 * (t / base - 1):+.1f} %) |")
    overhead = 100 * (med[f"default_monitors(every={DEFAULT_EVERY})"] / base - 1)
    body = "\n".join(
        [
            f"Command: `.venv/bin/python bench/bench_monitors.py` — {datetime.date.today().isoformat()}",
            f"Machine: {machine()}",
            "",
            f"Workload: MLP 64→256→LayerNorm→ReLU→256→ReLU→10 on digits, Adam, batch 64, {steps} steps per run "
            "through `reglab.fit`, 7 interleaved repeats, median. Baseline: the same run without callbacks.",
            "",
            *rows,
            "",
            f"Target: overhead at the default interval ≤ 3 % of step time; measured {overhead:+.1f} %.",
        ]
    )
    print(body)
    if write:
        write_section("Monitors overhead", body)
    return body


if __name__ == "__main__":
    main(write="--no-write" not in sys.argv)
