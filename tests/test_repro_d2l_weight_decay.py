"""D2L §3.7: weight decay on 200-dimensional regression with 20 points (the book's full setup)."""

import pytest
import torch
from sklearn.linear_model import Ridge

from reglab.data import make_high_dim_regression
from reglab.recipes.repro_d2l_weight_decay import ridge_path, run, train_from_scratch, train_library


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_published_claims_hold_over_seeds(result):
    assert result.passed, result.failed_checks()
    norms = result.metrics["norm"]
    assert all(0.02 <= v <= 0.06 for v in norms["scratch_lambda_3"])
    assert all(10 <= v <= 17 for v in norms["scratch_lambda_0"])
    assert min(result.metrics["test_loss_ratio"]) > 1000


def test_three_implementations_agree(result):
    # from scratch, reglab.Penalty and torch.optim.SGD(weight_decay) follow the same trajectory
    assert result.metrics["max_abs_weight_difference_between_methods"] < 1e-4
    for lam in ("0", "3"):
        a = result.metrics["norm"][f"library_lambda_{lam}"]
        b = result.metrics["norm"][f"torch_lambda_{lam}"]
        assert a == pytest.approx(b, rel=1e-4)


def test_ridge_path_matches_scikit_learn():
    data = make_high_dim_regression(seed=3)
    n = len(data.train)
    for row in ridge_path(data, [0.01, 3.0, 30.0]):
        # our objective mean((xw+b−y)²)/2 + λ/2‖w‖² is sklearn's ‖y−Xw−b‖² + α‖w‖² with α = nλ
        reference = Ridge(alpha=n * row["lambda"], fit_intercept=True, solver="svd").fit(
            data.train.x.double().numpy(), data.train.y.double().numpy()
        )
        assert row["norm"] == pytest.approx(float(torch.tensor(reference.coef_).norm()), rel=1e-6)


def test_ridge_at_zero_is_the_minimum_norm_interpolant():
    data = make_high_dim_regression(seed=0)
    row = ridge_path(data, [0.0])[0]
    assert row["train_loss"] < 1e-20
    x = data.train.x.double()
    xc, yc = x - x.mean(0), data.train.y.double() - data.train.y.double().mean()
    assert row["norm"] == pytest.approx(float((torch.linalg.pinv(xc) @ yc).norm()), rel=1e-8)


def test_short_library_run_matches_from_scratch_loop():
    data = make_high_dim_regression(seed=1)
    a = train_from_scratch(data, 3.0, seed=1, epochs=3)
    b = train_library(data, 3.0, seed=1, epochs=3)
    torch.testing.assert_close(a["w"], b["w"], rtol=1e-5, atol=1e-6)
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
