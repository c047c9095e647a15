"""Early stopping under 30 % label noise: the best-validation epoch beats the final one."""

import pytest

from reglab.recipes.repro_early_stopping import run


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_best_validation_epoch_beats_final_epoch(result):
    assert result.passed, result.failed_checks()
    best, last = result.metrics["test_acc_best_val_epoch"], result.metrics["test_acc_final_epoch"]
    assert sum(best) / len(best) > sum(last) / len(last)
    # the best epoch is early: memorization of the flipped labels comes later
    assert max(result.metrics["best_epoch"]) < result.metrics["epochs"]


def test_patience_run_stops_early_and_keeps_the_good_weights(result):
    stops = result.metrics["patience10_stop_epoch"]
    assert all(s < result.metrics["epochs"] for s in stops)
    last = result.metrics["test_acc_final_epoch"]
    assert sum(result.metrics["patience10_test_acc"]) > sum(last)


def test_unstopped_run_is_diagnosed_as_overfitting(result):
    assert set(result.metrics["diagnosis"]) == {"overfitting"}
