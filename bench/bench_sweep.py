"""Sweeps and the batched regularization path.

1. Throughput: BatchedPath (K=16 copies, explicit batched-matmul engine) vs 16 sequential runs of
   the same MLP on digits (a plain training loop with ``torch.optim.AdamW(foreach=True)``, same
   epochs, same batches), at hidden widths 64 and 256, both sides with 1 and with 2 torch threads.
   Target: >= 5x.
2. Time to a best weight decay within 10 % of the closed-form ridge optimum on the D2L regression:
   reglab's sweep (TPE + median pruning, sequential and batched backends) vs Optuna's default sampler
   without pruning (plain ``study.optimize`` over the same recipe run).

Run: .venv/bin/python bench/bench_sweep.py
     .venv/bin/python bench/bench_sweep.py --throughput-only   (re-measures table 1 only and merges
     it into the existing section of BENCHMARKS.md, keeping the time-to-target table as it is)
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
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
from reglab.recipes.digits import make_model  # noqa: E402
from reglab.sweep import RECIPES, ridge_validation_curve, sweep  # noqa: E402

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)
K, EPOCHS = 16, 3


THREADS = (1, 2)
REPEATS = 5
SECTION = "Sweeps and batched regularization path"
TARGET_MARK = "**Time to a weight decay"


def throughput(hidden: int, threads: int) -> tuple[float, float]:
    """Median seconds of (batched, sequential) over REPEATS interleaved runs, both with ``threads``."""
    torch.set_num_threads(threads)
    data = load_digits(n_train=400, n_val=300, noise=0.2, seed=0)
    wds = [0.01 * i for i in range(K)]

    def batches() -> TensorLoader:
        return TensorLoader(data.train.x, data.train.y, batch_size=32, shuffle=True, seed=0)

    def batched() -> None:
        path = BatchedPath(lambda: make_model(hidden, 0.0), seeds=[0] * K, weight_decay=wds, lr=1e-3)
        path.fit(batches(), epochs=EPOCHS)

    def sequential() -> None:
        # the usual loop: one model, one AdamW (decay on weight matrices only), K times over
        for wd in wds:
            torch.manual_seed(0)
            model = make_model(hidden, 0.0)
            decay = [p for p in model.parameters() if p.ndim >= 2]
            rest = [p for p in model.parameters() if p.ndim < 2]
            opt = torch.optim.AdamW(
                [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=1e-3, foreach=True
            )
            model.train()
            data_iter = batches()
            for _ in range(EPOCHS):
                loss_sum = torch.zeros(())
                for x, y in data_iter:
                    loss = nn.functional.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach() * y.shape[0]

    batched()  # warm-up
    sequential()
    tb, ts = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        batched()
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sequential()
        ts.append(time.perf_counter() - t0)
    torch.set_num_threads(1)
    return statistics.median(tb), statistics.median(ts)


def measure_throughput() -> list[tuple[int, int, float, float, float]]:
    """Rows ``(threads, hidden, batched_s, sequential_s, load average before the pair)``."""
    rows = []
    for threads in THREADS:
        for hidden in (64, 256):
            load = os.getloadavg()[0]
            tb, ts = throughput(hidden, threads)
            rows.append((threads, hidden, tb, ts, load))
            print(f"threads={threads} hidden={hidden}: batched {tb:.3f}s, sequential {ts:.3f}s, "
                  f"ratio {ts / tb:.2f}x (load {load:.1f})", flush=True)
    return rows


def throughput_lines(rows: list[tuple[int, int, float, float, float]]) -> list[str]:
    date = datetime.date.today().isoformat()
    lines = [
        f"**Batched path vs {K} sequential runs** (digits MLP 64→h→h→10, batch 32, 400 examples, {EPOCHS} epochs, "
        f"per-copy weight decay; batched: `BatchedPath` with its batched-matmul engine and fused Adam; baseline: "
        f"{K} plain training loops with `torch.optim.AdamW(foreach=True)`; both sides build their models inside "
        f"the timing and use the same torch thread count). Median of {REPEATS} interleaved pairs after a warm-up; "
        f"measured {date}, 1-minute load average of the shared machine given per row. Target: ≥ 5×.",
        "",
        "| threads | hidden width h | batched (s) | sequential (s) | throughput ratio | target met | load avg |",
        "|---:|---:|---:|---:|---:|:--:|---:|",
    ]
    for threads, hidden, tb, ts, load in rows:
        lines.append(
            f"| {threads} | {hidden} | {tb:.3f} | {ts:.3f} | {ts / tb:.1f}× | {'yes' if ts / tb >= 5 else 'no'} | {load:.1f} |"
        )
    lines += ["", THROUGHPUT_NOTE]
    return lines


THROUGHPUT_NOTE = (
    "The batched path saves per-step overhead (Python, kernel launches, optimizer bookkeeping), not arithmetic: "
    "the copies' matrix products are the same floating-point work, done as one `addmm` (first layer, shared input) "
    "and `baddbmm`/`bmm` over the stacked `(K, out, in)` weights, and one fused Adam over the stacked tensors. "
    "It helps most at small widths, where overhead dominates. At width 256 on one thread the batched step is "
    "bound by that arithmetic: profiled on a quiet core, one step of all 16 copies takes about 6.5 ms, about 4.5 ms "
    "of it matrix products (about 70 GFLOP/s, near what one AVX2 core does) and 1.4 ms Adam plus decay over "
    "1.4 M stacked parameters, while 16 sequential steps take about 22-25 ms; 5× would need them to take 33 ms, "
    "so at that width and thread count the target is out of reach unless the fp32 matrix products themselves get faster. "
    "With 2 threads the products could split over both cores, but with other jobs on the machine the second "
    "core is rarely free: at load ≈ 1.3 neither side gained from it, and at load ≈ 2-3 both sides ran up to 10× "
    "slower than on one thread (OpenMP threads waiting for a descheduled peer), so 2-thread rows say more about "
    "the machine's load than about either implementation."
)


def header_lines() -> list[str]:
    return [
        "Command: `.venv/bin/python bench/bench_sweep.py` (`--throughput-only` re-measures only the first table)  ",
        f"Machine: {machine().rsplit(', ', 1)[0]}, torch threads as given per row  ",
        "Measured on a shared 2-core machine under load from other jobs: ratios are indicative.",
        "",
    ]


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


def merge_throughput(rows: list[tuple[int, int, float, float, float]]) -> str:
    """The section with a new throughput table and the time-to-target part already in BENCHMARKS.md."""
    text = (Path(__file__).resolve().parent.parent / "BENCHMARKS.md").read_text()
    header = f"## {SECTION}\n"
    if header not in text or TARGET_MARK not in text.split(header, 1)[1]:
        raise SystemExit(f"no time-to-target table in section {SECTION!r}: run the full benchmark once")
    old = text.split(header, 1)[1]
    nxt = old.find("\n## ")
    old = old if nxt == -1 else old[:nxt]
    tail = old[old.index(TARGET_MARK):].strip("\n")
    first = tail.split("\n", 1)[0]
    when = re.search(r"Date: (\d{4}-\d{2}-\d{2})", old)
    if "measured" not in first and when and first.endswith("reaches the target)."):
        # an older section kept its date in the header; move it to the table it belongs to
        tail = tail.replace(first, first[: -len(").")] + f"; measured {when.group(1)}, 1 thread).", 1)
    return "\n".join(header_lines() + throughput_lines(rows) + ["", tail])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--throughput-only", action="store_true",
                        help="measure only the batched-vs-sequential table and merge it into BENCHMARKS.md")
    args = parser.parse_args()
    rows = measure_throughput()
    if args.throughput_only:
        body = merge_throughput(rows)
        print(body)
        write_section(SECTION, body)
        return

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
    lines = header_lines() + throughput_lines(rows)
    lines += [
        "",
        f"**Time to a weight decay within 10 % of the closed-form ridge optimum** (D2L 3.7 regression, "
        f"λ ∈ [1e-3, 1e2] log; target validation MSE ≤ 1.1 × {optimum:.5f} = {target:.5f}; median over seeds "
        f"{', '.join(map(str, seeds))}; trials counted up to the first one that reaches the target; measured {date}, "
        f"1 thread).",
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
