import math
import statistics

import pytest
import torch
from torch import nn

from reglab.data import TensorLoader
from reglab.loop import History, fit
from reglab.monitors import (
    Bf16LostUpdates,
    DeadReLU,
    EffectiveLR,
    Sparsity,
    UpdateRatio,
    WeightNorm,
    bf16_ulp,
    default_monitors,
    scale_invariant_weights,
)


def _norm_layer_run(weight_decay, steps=600, lr=0.5, every=10, extra=()):
    """Linear → LayerNorm (no affine) trained by SGD on fresh random targets: a scale-invariant layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32, bias=False), nn.LayerNorm(32, elementwise_affine=False))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps * 16, 16, generator=g)
    y = torch.randn(steps * 16, 32, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    mon = EffectiveLR(model, every=every)
    fit(model, TensorLoader(x, y, batch_size=16), optimizer=opt, loss_fn=nn.functional.mse_loss,
        epochs=1, callbacks=[mon, *extra])
    return model, mon


class _NormProbe:
    """Independent record of ‖w‖ before each optimizer step."""

    def __init__(self, weight):
        self.weight, self.norms = weight, {}

    def on_before_step(self, state):
        self.norms[state.step + 1] = float(self.weight.detach().norm())


def test_effective_lr_follows_lr_over_norm_squared_without_decay():
    torch.manual_seed(0)
    steps, lr = 600, 0.5
    model = nn.Sequential(nn.Linear(16, 32, bias=False), nn.LayerNorm(32, elementwise_affine=False))
    probe = _NormProbe(model[0].weight)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(steps * 16, 16, generator=g), torch.randn(steps * 16, 32, generator=g)
    mon = EffectiveLR(model, every=10)
    fit(model, TensorLoader(x, y, batch_size=16), optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        loss_fn=nn.functional.mse_loss, epochs=1, callbacks=[probe, mon])
    eff = mon.series("effective_lr", "0.weight")
    assert [s for s, _ in eff] == list(range(10, steps + 1, 10))
    for step, value in eff:
        assert value == pytest.approx(lr / probe.norms[step] ** 2, rel=1e-5)
    norms = [v for _, v in mon.series("weight_norm", "0.weight")]
    # gradient ⟂ w: without decay the norm can only grow, so the effective lr only falls
    assert all(b >= a * (1 - 1e-6) for a, b in zip(norms, norms[1:]))
    assert norms[-1] > 1.5 * norms[0]
    assert eff[-1][1] < 0.5 * eff[0][1]


def test_effective_lr_settles_with_decay_at_the_spherical_equilibrium():
    lr, wd = 0.5, 0.02
    _, mon = _norm_layer_run(wd, lr=lr)
    eff = [v for _, v in mon.series("effective_lr", "0.weight")]
    late = eff[len(eff) // 2 :]
    # settled: the last half varies by a few percent only
    assert statistics.pstdev(late) / statistics.fmean(late) < 0.05
    angles = [v for _, v in mon.series("angular_update", "0.weight")][len(eff) // 2 :]
    predicted = math.sqrt(2 * lr * wd)  # van Laarhoven 2017; Wan et al. 2021
    assert statistics.fmean(angles) == pytest.approx(predicted, rel=0.15)
    # while without decay the angular update keeps shrinking far below that value
    _, free = _norm_layer_run(0.0, lr=lr)
    free_angles = [v for _, v in free.series("angular_update", "0.weight")]
    assert statistics.fmean(free_angles[-10:]) < 0.5 * predicted


def test_scale_invariant_detection():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())
    assert scale_invariant_weights(seq) == {"0.weight": "1"}

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 8)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.norm(self.proj(x)))

    block = Block().train()
    assert scale_invariant_weights(block) == {}
    assert scale_invariant_weights(block, torch.randn(2, 4)) == {"proj.weight": "norm"}
    assert block.training and all(m.training for m in block.modules())
    with pytest.raises(ValueError, match="weights must name at least one"):
        EffectiveLR(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="unknown names"):
        EffectiveLR(block, ["nope"])


def _mlp_run(callbacks, steps_per_epoch=4, epochs=3, dtype=torch.float32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).to(dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps_per_epoch * 8, 8, generator=g).to(dtype)
    y = torch.randint(0, 3, (steps_per_epoch * 8,), generator=g)
    decay = [model[0].weight, model[2].weight]
    rest = [model[0].bias, model[2].bias]
    opt = torch.optim.SGD([{"params": decay, "name": "decay"}, {"params": rest}], lr=0.1)
    cbs = callbacks(model) if callable(callbacks) else callbacks
    fit(model, TensorLoader(x, y, batch_size=8), optimizer=opt, loss_fn=nn.functional.cross_entropy,
        epochs=epochs, callbacks=cbs)
    return model, opt, cbs


def test_weight_norm_update_ratio_and_sparsity_against_manual_values():
    snaps = {}

    class Snap:
        def on_before_step(self, state):
            snaps[state.step + 1] = [p.detach().clone() for p in state.optimizer.param_groups[0]["params"]]

        def on_step_end(self, state):
            snaps[state.step] = (snaps[state.step], [p.detach().clone() for p in state.optimizer.param_groups[0]["params"]])

    wn, ur, sp = WeightNorm(every=5), UpdateRatio(every=5), Sparsity(every=5)
    model, opt, _ = _mlp_run([Snap(), wn, ur, sp])
    assert [r["step"] for r in wn.records] == [5, 5, 10, 10]
    assert {r["group"] for r in wn.records} == {"decay", "group1"}
    assert [r["epoch"] for r in wn.records if r["group"] == "decay"] == [2, 3]
    before, after = snaps[10]
    assert wn.series("weight_norm", "decay")[-1][1] == pytest.approx(
        math.sqrt(sum(float((p**2).sum()) for p in after)), rel=1e-6)
    delta = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before)))
    wnorm = math.sqrt(sum(float((b**2).sum()) for b in before))
    assert ur.series("update_ratio", "decay")[-1] == (10, pytest.approx(delta / wnorm, rel=1e-5))
    assert sp.series("sparsity", "decay")[-1][1] == 0.0
    with torch.no_grad():
        model[0].weight[:4].zero_()
    sp.after_step(opt, 15)
    assert sp.records[-2]["sparsity"] == pytest.approx(4 * 8 / (16 * 8 + 3 * 16))


def test_bf16_ulp_and_lost_updates_match_real_rounding():
    assert bf16_ulp(torch.tensor([1.0, 1.5, 2.0, -0.75])).tolist() == [2**-7, 2**-7, 2**-6, 2**-8]
    # the spacing really is the gap to the next bf16 number
    w = torch.tensor([0.3, 1.7, 42.0]).bfloat16().float()
    nxt = torch.nextafter(w.bfloat16(), torch.tensor(1e9).bfloat16()).float()
    assert torch.equal(nxt - w, bf16_ulp(w))

    mon = Bf16LostUpdates(every=1)
    p = nn.Parameter(torch.randn(4000).bfloat16().float())  # values exactly representable in bf16
    p.grad = torch.randn(4000) * torch.logspace(-6, -1, 4000)
    opt = torch.optim.SGD([p], lr=1.0)
    before = p.detach().clone()
    mon.before_step(opt, 0)
    opt.step()
    mon.after_step(opt, 1)
    delta = p.detach() - before
    truly_lost = ((before + delta).bfloat16() == before.bfloat16()) & (delta != 0)
    expected = float(truly_lost.sum()) / float((delta != 0).sum())
    assert 0.2 < expected < 0.8
    assert mon.records[0]["bf16_lost"] == pytest.approx(expected, abs=0.01)


def test_bf16_parameters_count_unchanged_entries():
    mon = Bf16LostUpdates(every=1)
    p = nn.Parameter(torch.ones(10, dtype=torch.bfloat16))
    p.grad = torch.tensor([1e-4] * 5 + [0.1] * 5, dtype=torch.bfloat16)
    opt = torch.optim.SGD([p], lr=1.0)
    mon.before_step(opt, 0)
    opt.step()
    mon.after_step(opt, 1)
    assert mon.records[0]["bf16_lost"] == pytest.approx(0.5)


def test_dead_relu_counts_units_dead_on_the_recorded_batch():
    def make(model):
        with torch.no_grad():
            model[0].bias[:4] = -100.0  # 4 of 16 units can never fire
        return [DeadReLU(model, every=2)]

    model, _, (dead,) = _mlp_run(make)
    assert [r["step"] for r in dead.records] == [2, 4, 6, 8, 10, 12]
    assert all(r["group"] == "1" for r in dead.records)
    assert all(r["dead_fraction"] >= 4 / 16 for r in dead.records)
    assert not model[1]._forward_hooks  # hooks live only around recorded forward passes
    x = torch.randn(64, 8)
    with torch.no_grad():
        expected = float((model[1](model[0](x)) == 0).all(0).float().mean())
    dead.arm()
    model.train()
    model(x)
    dead.after_step(None, 100)
    assert dead.records[-1]["dead_fraction"] == pytest.approx(expected)
    dead.remove()
    with pytest.raises(ValueError, match="nn.ReLU"):
        DeadReLU(nn.Linear(2, 2))


def test_interval_validation_and_state_round_trip(tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=f"every={bad!r}"):
            WeightNorm(every=bad)
    _, _, (wn, ur) = _mlp_run([WeightNorm(every=3), UpdateRatio(every=3)])
    for mon, cls in ((wn, WeightNorm), (ur, UpdateRatio)):
        state = mon.state_dict()
        fresh = cls(every=1)
        fresh.load_state_dict(state)
        assert fresh.every == 3 and fresh.records == mon.records
        assert fresh.state_dict() == state
    hist = wn.to_history()
    assert isinstance(hist, History) and len(hist) == len(wn.records)
    loaded = History.load(hist.save(tmp_path / "wn.csv"))
    assert loaded["weight_norm"] == pytest.approx(hist["weight_norm"])
    assert wn.rows() == wn.records and wn.rows() is not wn.records


def test_default_monitors_run_inside_fit():
    def make(model):
        return default_monitors(model, every=2)

    _, _, mons = _mlp_run(make)
    names = [type(m).__name__ for m in mons]
    assert names == ["WeightNorm", "UpdateRatio", "Bf16LostUpdates", "Sparsity", "DeadReLU"]
    assert all(len(m.records) > 0 for m in mons)
    seq = nn.Sequential(nn.Linear(4, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU())
    assert "EffectiveLR" in [type(m).__name__ for m in default_monitors(seq)]
