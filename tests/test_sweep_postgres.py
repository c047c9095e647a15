"""Acceptance: a real PostgreSQL server, two worker processes on one study, one killed mid-trial.

The study must end with exactly the requested number of complete trials, the killed trial failed
and re-run once (same parameters), and no trial counted twice. Fails, never skips, when the
PostgreSQL binaries are missing (install them with ``bash scripts/system-deps.sh``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import _sweep_worker as worker
from pg import postgres_server
from reglab.sweep import SURPLUS, load_sweep, open_study

HERE = Path(__file__).parent
N_TRIALS = 5


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def _spawn(url: str, study: str, seed: int, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(HERE / "_sweep_worker.py"), url, study, str(N_TRIALS), str(seed), "0.3", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_workers_one_killed_mid_trial_exact_budget(pg_url, tmp_path):
    study_name = "two-workers"
    worker.register_slow(0.3)
    # the parent creates the tables and the study, so both workers join an existing one
    open_study(
        "slow_regression", worker.PARAMS, storage=pg_url, study=study_name, config=worker.CONFIG,
        pruner="none", heartbeat_interval=1, grace_period=3,
    )
    victim = _spawn(pg_url, study_name, 1, tmp_path / "w1")
    survivor = _spawn(pg_url, study_name, 2, tmp_path / "w2")
    storage = optuna.storages.RDBStorage(pg_url)
    killed_number = None
    try:
        deadline = time.monotonic() + 90
        while killed_number is None and time.monotonic() < deadline:
            assert victim.poll() is None, f"worker 1 exited early: {victim.stdout.read()}"
            study = optuna.load_study(study_name=study_name, storage=storage)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if str(t.user_attrs.get("worker", "")).endswith(f":{victim.pid}") and t.intermediate_values:
                    killed_number = t.number
                    break
            else:
                time.sleep(0.2)
        assert killed_number is not None, "worker 1 never reached the middle of a trial"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        out, _ = survivor.communicate(timeout=150)
        assert survivor.returncode == 0, out
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
                p.wait()

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = next(t for t in trials if t.number == killed_number)
    assert killed.state == TrialState.FAIL  # failed by the heartbeat check, not left running
    # re-queued with the same parameters and completed exactly once
    retries = [t for t in complete if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == killed.params
    # nothing counted twice: no complete trial is the origin or a sibling retry of another
    origins = [t.system_attrs.get("failed_trial") for t in complete if "failed_trial" in t.system_attrs]
    assert len(origins) == len(set(origins))
    assert not {t.number for t in complete} & set(origins)
    assert not [t for t in complete if t.user_attrs.get(SURPLUS)]
    # both workers did work
    workers = {str(t.user_attrs.get("worker")).rsplit(":", 1)[-1] for t in trials if t.user_attrs.get("worker")}
    assert {str(victim.pid), str(survivor.pid)} <= workers
    result = load_sweep(pg_url, study_name)
    assert len([r for r in result.trials() if r["state"] == "COMPLETE"]) == N_TRIALS
    assert "weight_decay" in result.best_params
