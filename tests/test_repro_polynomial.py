"""Polynomial capacity (D2L): degree 3 recovers the cubic, a line underfits, degree 20 overfits."""

import itertools

import pytest

import torch

from reglab.data import make_polynomial
from reglab.recipes.repro_polynomial import TRUE, least_squares, monomial_count, run


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_book_claims_hold(result):
    checks = result.checks
    assert max(max(e) for e in result.metrics["coefficient_error_degree3"]) < 0.2 and checks[0].passed
    assert min(result.metrics["train_mse"]["1"]) > 1 and checks[1].passed
    te, tr = result.metrics["test_mse"]["20"], result.metrics["train_mse"]["20"]
    assert sum(te) > sum(tr) and checks[3].passed


def test_line_is_diagnosed_as_underfitting_in_every_seed(result):
    # the criterion; the check in the report must agree with the diagnoses
    regimes = result.metrics["diagnosis"]["1"]
    assert regimes and all(r == "underfitting" for r in regimes), regimes
    assert result.checks[2].passed


def test_degree_3_reaches_the_noise_floor(result):
    # noise σ = 0.1: a correct model's MSE is close to σ² = 0.01, far below the line's
    for mse in result.metrics["test_mse"]["3"]:
        assert 0.005 < mse < 0.02
    assert len(result.metrics["weights"]["3"][0]) == len(TRUE)


def test_least_squares_is_the_reference_sgd_approaches(result):
    # the exact minimiser on the same 100 points sits near the true cubic; SGD's weights sit near it
    data = make_polynomial(max_degree=20, coefficients=TRUE, noise_std=0.1, seed=0)
    w = least_squares(data, 3)
    assert float((w - torch.tensor(TRUE)).abs().max()) < 0.1
    for ls_err, sgd_err in zip(result.metrics["least_squares_error_degree3"], result.metrics["coefficient_error_degree3"]):
        assert max(ls_err) < 0.1 and abs(max(sgd_err) - max(ls_err)) < 0.05


@pytest.mark.parametrize("k, d", [(1, 5), (2, 3), (3, 4), (4, 2), (5, 3)])
def test_monomial_count_matches_enumeration(k, d):
    brute = sum(1 for _ in itertools.combinations_with_replacement(range(k), d))
    assert monomial_count(k, d) == brute


def test_monomial_count_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k=0"):
        monomial_count(0, 2)
    with pytest.raises(ValueError, match="d=-1"):
        monomial_count(3, -1)
