"""Stochastic depth (Huang et al. 2016): active blocks, step time, and error against the baseline."""

import pytest
import torch

from reglab.recipes.repro_stochastic_depth import BLOCKS, ResidualMLP, SkipBlock, run


def test_skip_block_train_and_eval_semantics():
    block = SkipBlock(8, 0.25, torch.Generator().manual_seed(0))
    x = torch.randn(4, 8)
    block.eval()
    torch.testing.assert_close(block(x), x + 0.75 * block.f(x))  # eval: branch scaled by survival
    block.train()
    outs = [block(x) for _ in range(400)]
    skipped = sum(torch.equal(o, x) for o in outs)
    assert block.calls == 400 and block.active == 400 - skipped
    assert 0.18 < skipped / 400 < 0.32  # about p = 0.25 of the batches skip the branch
    with pytest.raises(ValueError, match="p=1.0"):
        SkipBlock(8, 1.0)


def test_stochastic_and_baseline_models_have_the_same_keys():
    assert list(ResidualMLP([0.0] * BLOCKS).state_dict()) == list(ResidualMLP([0.3] * BLOCKS).state_dict())


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_active_blocks_and_reported_outcome(result):
    m = result.metrics
    assert abs(sum(m["active_blocks"]) / len(m["active_blocks"]) / m["expected_active"] - 1) <= 0.05
    assert result.checks[0].passed
    # fewer blocks computed makes a step cheaper (timing on a shared machine: only the direction is asserted)
    assert m["timing"]["ratio"] < 1.0
    err_b, err_s = m["test_error_baseline"], m["test_error_stochastic"]
    assert len(err_b) == 5 and max(err_b + err_s) < 0.1
    assert result.checks[2].passed == (sum(err_s) / 5 <= sum(err_b) / 5 + 0.005)


def test_lr_schedule_steps_down_at_half_and_three_quarters():
    from reglab.recipes.repro_stochastic_depth import lr_factor

    assert [lr_factor(e, 8) for e in range(8)] == [1.0] * 4 + [0.1] * 2 + [0.01] * 2
