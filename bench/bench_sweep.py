"""Sweeps and the batched regularization path.

1. Throughput: BatchedPath (K=16 copies under vmap) vs 16 sequential ``reglab.fit`` runs of the same
   MLP on digits (torch AdamW, same epochs, same batches). Target: >= 5x.
2. Time to a best weight decay within 10 % of the closed-form ridge optimum on the D2L regression:
   reglab's sweep (TPE + median pruning, sequential and batched backends) vs Optuna's default sampler
   without pruning (plain ``study.optimize`` over the same recipe run).

Run: .venv/bin/python bench/bench_sweep.py
"""

from __future__ import annotations

import datetime
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_section  # noqa: E402

from reglab.batched import BatchedPath  # noqa: E402
from reglab.data import TensorLoader, load_digits  # noqa: E402
from reglab.loop import fit  # noqa: E402
from reglab.recipes.digits import make_model  # noqa: E402
from reglab.sweep import RECIPES, ridge_validation_curve, sweep  # noqa: E402

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
K, EPOCHS = 16, 3


def throughput(hidden: int) -> tuple[float, float]:
    data = load_digits(n_train=400, n_val=300, noise=0.2, seed=0)
    wds = [0.01 * i for i in range(K)]

    def batched() -> None:
        path = BatchedPath(lambda: make_model(hidden, 0.0), seeds=[0] * K, weight_decay=wds, lr=1e-3)
        path.fit(TensorLoader(data.train.x, data.train.y, batch_size=32, shuffle=True, seed=0), epochs=EPOCHS)

    def sequential() -> None:
        for wd in wds:
            torch.manual_seed(0)
            model = make_model(hidden, 0.0)
            decay = [p for p in model.parameters() if p.ndim >= 2]
            rest = [p for p in model.parameters() if p.ndim < 2]
            opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)
            fit(model, TensorLoader(data.train.x, data.train.y, batch_size=32, shuffle=True, seed=0),
                optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=EPOCHS)

    batched()  # warm-up
    sequential()
    t0 = time.perf_counter()
    batched()
    tb = time.perf_counter() - t0
    t0 = time.perf_counter()
    sequential()
    ts = time.perf_counter() - t0
    return tb, ts


def time_to_target(kind: str, seed: int, target: float, max_trials: int = 40) -> tuple[int | None, float | None]:
    hit: dict[str, float] = {}
    t0 = time.perf_counter()
    count = {"n": 0}

    def on_trial(t) -> None:
        count["n"] += 1
        if "t" not in hit and t.value is not None and t.state.name == "COMPLETE" and t.value <= target:
            hit["t"], hit["n"] = time.perf_counter() - t0, count["n"]

    if kind == "optuna":
        rec = RECIPES["regression"]
        cfg = rec.config()
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))

        def objective(trial):
            lam = trial.suggest_float("weight_decay", 1e-3, 1e2, log=True)
            return float(rec.run({"weight_decay": lam}, cfg, lambda row: None)["val_loss"])

        for _ in range(max_trials):
            study.optimize(objective, n_trials=1, callbacks=[lambda s, t: on_trial(t)])
            if "t" in hit:
                break
    else:
        backend = "batched" if kind == "reglab-batched" else "sequential"

        class Done(Exception):
            pass

        def stop_on_hit(t) -> None:
            on_trial(t)
            if "t" in hit and backend == "sequential":
                raise Done

        try:
            sweep("regression", ["weight_decay=log:1e-3..1e2"], trials=max_trials, storage="memory", seed=seed,
                  backend=backend, batch=8, on_trial=stop_on_hit)
        except Done:
            pass
    return (int(hit["n"]), hit["t"]) if hit else (None, None)


def main() -> None:
    rows = []
    for hidden in (64, 256):
        tb, ts = throughput(hidden)
        rows.append((hidden, tb, ts))
        print(f"hidden={hidden}: batched {tb:.2f}s, sequential {ts:.2f}s, ratio {ts / tb:.2f}x", flush=True)

    curve = ridge_validation_curve(np.logspace(-3, 3, 121))
    optimum = min(v for _, v in curve)
    target = 1.10 * optimum
    seeds = (0, 1, 2)
    results = {}
    for kind in ("optuna", "reglab", "reglab-batched"):
        runs = [time_to_target(kind, s, target) for s in seeds]
        results[kind] = runs
        print(kind, runs, flush=True)

    def summ(runs):
        ok = [r for r in runs if r[0] is not None]
        if not ok:
            return "not reached in 40 trials", "-"
        n = statistics.median(r[0] for r in ok)
        t = statistics.median(r[1] for r in ok)
        miss = len(runs) - len(ok)
        return f"{n:g}" + (f" ({miss} missed)" if miss else ""), f"{t:.2f}"

    date = datetime.date.today().isoformat()
    lines = [
        "Command: `.venv/bin/python bench/bench_sweep.py`  ",
        f"Machine: {machine()}  ",
        f"Date: {date}. Measured once, on a shared 2-core machine under load from other jobs: ratios are indicative.",
        "",
        f"**Batched path vs {K} sequential runs** (digits MLP 64→h→h→10, Adam/AdamW, batch 32, 400 examples, "
        f"{EPOCHS} epochs, per-copy weight decay; baseline: {K} × `reglab.fit` with `torch.optim.AdamW`). Target: ≥ 5×.",
        "",
        "| hidden width h | batched (s) | sequential (s) | throughput ratio | target met |",
        "|---:|---:|---:|---:|:--:|",
    ]
    for hidden, tb, ts in rows:
        lines.append(f"| {hidden} | {tb:.2f} | {ts:.2f} | {ts / tb:.1f}× | {'yes' if ts / tb >= 5 else 'no'} |")
    lines += [
        "",
        "The batched path saves per-step overhead (Python, kernel launches, optimizer bookkeeping), not arithmetic: "
        "the copies' matrix products are the same floating-point work done as batched matmuls. It helps most for "
        "small widths, where the overhead dominates; at the demo width (256) one core is compute-bound either way.",
    ]
    lines += [
        "",
        f"**Time to a weight decay within 10 % of the closed-form ridge optimum** (D2L 3.7 regression, "
        f"λ ∈ [1e-3, 1e2] log; target validation MSE ≤ 1.1 × {optimum:.5f} = {target:.5f}; median over seeds "
        f"{', '.join(map(str, seeds))}; trials counted up to the first one that reaches the target).",
        "",
        "| sweep | trials to target | seconds to target |",
        "|---|---:|---:|",
    ]
    names = {
        "optuna": "Optuna default sampler (TPE), no pruning (baseline)",
        "reglab": "reglab sweep, TPE + median pruning, sequential",
        "reglab-batched": "reglab sweep, TPE + median pruning, batched backend (8 per round)",
    }
    for kind, runs in results.items():
        n, t = summ(runs)
        lines.append(f"| {names[kind]} | {n} | {t} |")
    lines += [
        "",
        "Batched rounds ask Optuna for 8 trials before any of them finishes, so TPE learns from fewer results and "
        "needs more trials; whether that pays off in seconds depends on how much a round of 8 saves over 8 single "
        "runs (little for this tiny linear model). Pruning stops hopeless trials at an epoch boundary.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("Sweeps and batched regularization path", body)


if __name__ == "__main__":
    main()
