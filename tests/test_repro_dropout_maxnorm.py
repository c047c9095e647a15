"""Dropout and max-norm (Srivastava et al. 2014): five settings over five seeds on digits."""

import pytest
import torch

from reglab.recipes.repro_dropout_maxnorm import SETTINGS, make_model, run, train


def test_settings_share_state_dict_keys_and_bad_setting_is_named():
    assert len({tuple(make_model(32).state_dict()) for _ in SETTINGS}) == 1
    with pytest.raises(ValueError, match="setting='bogus'"):
        train("bogus", 0, None, epochs=1)


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_outcome_follows_the_paper_criterion_and_max_norm_binds(result):
    mean = result.metrics["mean_test_error"]
    checks = result.checks
    assert checks[0].passed == (mean["dropout_max_norm"] <= mean["none"])
    assert checks[1].passed == (mean["dropout_max_norm"] <= mean["l2"])
    assert checks[2].passed  # the constraint itself always holds
    for s in SETTINGS:
        errors = result.metrics["test_error"][s]
        assert len(errors) == 5 and all(0 <= e < 0.2 for e in errors)  # every setting learns digits
    assert result.passed == all(c.passed for c in checks)



def test_optimizer_arguments_reach_sgd():
    # lr = 0 leaves the initial weights: the row norms are those of a freshly seeded model
    from reglab.data import load_digits

    data = load_digits(n_train=100, n_val=50, seed=0)
    frozen = train("none", 0, data, epochs=1, hidden=32, lr=0.0, momentum=0.95)
    torch.manual_seed(0)
    init = max(float(m.weight.detach().norm(dim=1).max()) for m in make_model(32) if isinstance(m, torch.nn.Linear))
    assert frozen["max_row_norm"] == pytest.approx(init)
    moved = train("none", 0, data, epochs=1, hidden=32, lr=0.5, momentum=0.95)
    assert moved["max_row_norm"] != pytest.approx(init)
