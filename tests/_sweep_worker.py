"""A sweep worker for the multi-process tests: the regression recipe, slowed down per epoch.

Usage: python tests/_sweep_worker.py STORAGE STUDY TRIALS SEED [EPOCH_DELAY]

Each epoch sleeps EPOCH_DELAY seconds so that a test can kill the process in the middle of a trial.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import optuna
import torch

from reglab import sweep as sw

PARAMS = ["weight_decay=log:1e-3..1e2"]
CONFIG = {"epochs": 6}


def register_slow(delay: float) -> None:
    base = sw.RECIPES["regression"]

    def run(params, cfg, on_epoch):
        def slow(row):
            time.sleep(delay)
            on_epoch(row)

        return base.run(params, cfg, slow)

    sw.register_recipe(dataclasses.replace(base, name="slow_regression", run=run, run_batched=None, batched_params=()))


def main(argv: list[str]) -> int:
    storage, study, trials, seed = argv[0], argv[1], int(argv[2]), int(argv[3])
    delay = float(argv[4]) if len(argv) > 4 else 0.3
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    register_slow(delay)
    sw.sweep(
        "slow_regression",
        PARAMS,
        trials=trials,
        storage=storage,
        study=study,
        config=CONFIG,
        pruner="none",
        seed=seed,
        heartbeat_interval=1,
        grace_period=3,
        poll_interval=0.5,
        out=argv[5] if len(argv) > 5 else "runs/sweep-worker",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
