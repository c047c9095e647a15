"""Decoupled vs coupled decay: exact equivalences against torch's optimizers, and the grid."""

import pytest

from reglab.recipes._repro import fmt
from reglab.recipes.repro_decoupled import ADAM_L2, LRS, adam_vs_adamw, grid, run, sgd_equivalence


def test_sgd_l2_penalty_equals_decoupled_decay():
    assert sgd_equivalence(lam=0.3, lr=0.1, steps=30) < 1e-6


def test_decoupled_adam_is_adamw_and_differs_from_adam_l2():
    out = adam_vs_adamw(lam=0.1, lr=1e-3, steps=30)
    assert out["decoupled_adam_vs_torch_adamw"] < 1e-6
    assert out["adamw_vs_adam_l2"] > 1e-3


def test_grid_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind='sgd'"):
        grid("sgd", ADAM_L2)


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_grid_outcome_is_measured_and_reported_honestly(result):
    assert all(c.passed for c in result.checks[:3])  # the exact statements must hold
    assert result.metrics["seeds"] == 2
    for kind in ("adamw", "adam_l2"):
        g = result.metrics["grids"][kind]
        assert len(g["test"]) == len(LRS) and all(len(row) == 5 for row in g["test"])
        # the best index of each row is the row's minimum mean test error
        assert all(row[i] == min(row) for row, i in zip(g["test"], g["best"]))
        assert g["spread"] == max(g["best"]) - min(g["best"])
        assert g["edge_rows"] == [fmt(lr) for lr, i in zip(LRS, g["best"]) if i in (0, 4)]
    grid_check = result.checks[3]
    aw, l2 = result.metrics["grids"]["adamw"], result.metrics["grids"]["adam_l2"]
    assert grid_check.passed == (aw["spread"] < l2["spread"] and not aw["edge_rows"])
    assert f"({aw['spread']} steps;" in grid_check.measured
    assert f"({l2['spread']} steps;" in grid_check.measured
    assert ("not reproduced" in result.diagnosis) != grid_check.passed
    assert len(result.plots) == 2 and all(p.kind == "heatmap" for p in result.plots)
