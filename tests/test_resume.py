"""Resume: an interrupted run continued from its checkpoint is bit-identical to an uninterrupted one."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from reglab import checkpoint
from reglab.checkpoint import Checkpointer
from reglab.data import TensorLoader
from reglab.loop import LRScheduler, fit
from reglab.stopping import EMA, EarlyStopping


class Interrupted(Exception):
    pass


class KillAt:
    """Simulates a crash: raises at the start of the given epoch (after the previous checkpoint)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, state):
        if self.epoch is not None and state.epoch + 1 == self.epoch:
            raise Interrupted(f"killed before epoch {self.epoch}")


class NoisyGrad:
    """Draws from python's and numpy's global RNGs, so the trajectory depends on their state."""

    def on_after_backward(self, state):
        scale = 1e-3 * random.random()
        for p in state.model.parameters():
            p.grad.add_(torch.from_numpy(np.random.standard_normal(p.shape).astype(np.float32)) * scale)


def _setup(seed, ckpt_dir, kill_at=None):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, :2].sum(1) > 0).long()
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.05)
    callbacks = [
        NoisyGrad(),
        LRScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)),
        EMA(model, decay=0.9),
        EarlyStopping(monitor="val_loss", patience=50),
        Checkpointer(ckpt_dir, every=1, keep=2),
        KillAt(kill_at),
    ]
    kwargs = dict(
        optimizer=opt,
        loss_fn=nn.functional.cross_entropy,
        eval_sets={"val": TensorLoader(x[:32], y[:32], batch_size=32)},
        callbacks=callbacks,
    )
    return model, TensorLoader(x, y, batch_size=16, shuffle=True, seed=seed), kwargs


def _without_time(history):
    return [{k: v for k, v in r.items() if k != "time"} for r in history.records]


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    model_a, loader_a, kw_a = _setup(0, tmp_path / "a")
    hist_a = fit(model_a, loader_a, epochs=6, **kw_a)
    rng_a = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())

    model_b, loader_b, kw_b = _setup(0, tmp_path / "b", kill_at=4)
    with pytest.raises(Interrupted):
        fit(model_b, loader_b, epochs=6, **kw_b)
    assert checkpoint.latest(tmp_path / "b").name == "epoch-000003.safetensors"

    # a new process would rebuild everything; different seeds show that the checkpoint wins
    model_c, loader_c, kw_c = _setup(123, tmp_path / "b")
    hist_c = fit(model_c, loader_c, epochs=6, resume=tmp_path / "b", **kw_c)

    assert hist_c["epoch"] == [1, 2, 3, 4, 5, 6]
    assert _without_time(hist_c) == _without_time(hist_a)
    for (name, a), c in zip(model_a.named_parameters(), model_c.parameters()):
        assert torch.equal(a, c), name
    ema_a, ema_c = kw_a["callbacks"][2], kw_c["callbacks"][2]
    for a, c in zip(ema_a.averaged.parameters(), ema_c.averaged.parameters()):
        assert torch.equal(a, c)
    opt_a, opt_c = kw_a["optimizer"], kw_c["optimizer"]
    assert opt_a.param_groups[0]["lr"] == opt_c.param_groups[0]["lr"] == 3e-2 / 8
    for p_a, p_c in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(opt_a.state[p_a]["exp_avg_sq"], opt_c.state[p_c]["exp_avg_sq"])
    stop_a, stop_c = kw_a["callbacks"][3], kw_c["callbacks"][3]
    assert (stop_a.best, stop_a.best_epoch, stop_a.wait) == (stop_c.best, stop_c.best_epoch, stop_c.wait)
    # the global RNGs end where the uninterrupted run left them
    assert torch.equal(torch.get_rng_state(), rng_a[0])
    assert np.array_equal(np.random.get_state()[1], rng_a[1]) and random.getstate() == rng_a[2]


def test_resume_from_an_explicit_file_and_rerun_after_the_end(tmp_path):
    model, loader, kw = _setup(0, tmp_path / "ck")
    fit(model, loader, epochs=4, **kw)
    final = [p.detach().clone() for p in model.parameters()]
    model2, loader2, kw2 = _setup(1, tmp_path / "ck2")
    hist = fit(model2, loader2, epochs=4, resume=tmp_path / "ck" / "epoch-000004.safetensors", **kw2)
    assert len(hist) == 4  # nothing left to run
    for a, b in zip(final, model2.parameters()):
        assert torch.equal(a, b)


def test_resume_after_an_early_stop_restores_best_and_stops(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    y = torch.randn(40, 1)
    val = TensorLoader(-x, y, batch_size=40)

    def run(directory):
        model = nn.Linear(3, 1)
        stopper = EarlyStopping(monitor="val_loss", patience=2)
        hist = fit(model, TensorLoader(x, y, batch_size=10), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   loss_fn=nn.functional.mse_loss, epochs=30, eval_sets={"val": val},
                   callbacks=[stopper, Checkpointer(directory)], resume=directory)
        return model, stopper, hist

    model, stopper, hist = run(tmp_path)
    assert stopper.stopped_epoch == len(hist) < 30
    model2, stopper2, hist2 = run(tmp_path)  # rerun the same command: nothing to do
    assert len(hist2) == len(hist) and stopper2.stopped_epoch == stopper.stopped_epoch
    assert torch.equal(model2.weight, model.weight)  # both hold the restored best weights


def test_resume_errors(tmp_path):
    model, loader, kw = _setup(0, tmp_path / "ck")
    fit(model, loader, epochs=1, **kw)
    from reglab.loop import History

    with pytest.raises(ValueError, match="history or resume"):
        fit(model, loader, epochs=2, history=History(), resume=tmp_path / "ck", **kw)
    kw_fewer = dict(kw, callbacks=[cb for cb in kw["callbacks"] if not isinstance(cb, EMA)])
    with pytest.raises(ValueError, match="no state for callbacks"):
        fit(model, loader, epochs=2, resume=tmp_path / "ck", **kw_fewer)
    plain = checkpoint.save(tmp_path / "plain.safetensors", model, kw["optimizer"])
    with pytest.raises(ValueError, match="no loop state"):
        fit(model, loader, epochs=2, resume=plain, **kw)
    with pytest.raises(FileNotFoundError):
        fit(model, loader, epochs=2, resume=tmp_path / "absent.safetensors", **kw)


def test_resume_from_empty_directory_starts_fresh(tmp_path):
    model_a, loader_a, kw_a = _setup(0, tmp_path / "a")
    hist_a = fit(model_a, loader_a, epochs=2, **kw_a)
    model_b, loader_b, kw_b = _setup(0, tmp_path / "b")
    hist_b = fit(model_b, loader_b, epochs=2, resume=tmp_path / "b", **kw_b)
    assert _without_time(hist_a) == _without_time(hist_b)
