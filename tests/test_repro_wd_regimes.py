"""Weight decay in two regimes: the SGD equilibrium angle of scale-invariant weights, and a tiny
character transformer under bf16 autocast."""

import math

import pytest
import torch

from reglab.recipes.repro_wd_regimes import CharTransformer, run, stdlib_text


def test_stdlib_text_ships_with_python_and_is_ascii():
    text = stdlib_text(50_000)
    assert len(text) == 50_000 and text.isascii() and "def " in text


def test_attention_is_causal_and_records_its_largest_logit():
    torch.manual_seed(0)
    model = CharTransformer(d=16, heads=2, layers=1, context=8).eval()
    idx = torch.randint(0, 128, (2, 8))
    out = model(idx)
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 128
    # changing the last token cannot change the predictions at earlier positions
    torch.testing.assert_close(model(changed)[:, :-1], out[:, :-1])
    assert model.max_attention_logit() > 0


@pytest.fixture(scope="module")
def result():
    return run(fast=True)


def test_angular_update_reaches_sqrt_2_lr_lambda(result):
    assert result.checks[0].passed and result.checks[1].passed
    si = result.metrics["scale_invariant"]["lr=0.1,wd=0.01"]
    assert si["predicted"] == pytest.approx(math.sqrt(2 * 0.1 * 0.01))
    assert si["steady_angular_update"] == pytest.approx(si["predicted"], rel=0.2)


def test_transformer_numbers_are_reported(result):
    lm = result.metrics["transformer"]
    assert set(lm) == {"wd=0,fp32", "wd=0,bf16", "wd=0.1,fp32", "wd=0.1,bf16"}
    for v in lm.values():
        assert math.isfinite(v["final_val_loss"]) and v["steps"] == 8 and v["max_attention_logit"] > 0
    assert result.checks[2].passed == all(
        lm[f"wd=0.1,{p}"]["weight_norm"] < lm[f"wd=0,{p}"]["weight_norm"] for p in ("fp32", "bf16"))
