import math

import pytest
import torch
from torch import nn

from reglab.data import TensorLoader
from reglab.loop import History, LRScheduler, evaluate, fit


def _problem(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


def test_fit_records_history_and_learns():
    x, y = _problem()
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = TensorLoader(x, y, batch_size=16, shuffle=True)
    hist = fit(model, loader, optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=20,
               eval_sets={"val": TensorLoader(x, y, batch_size=64)})
    assert len(hist) == 20
    assert hist["epoch"] == list(range(1, 21))
    assert hist["step"][-1] == 20 * 4
    assert hist["val_loss"][-1] < hist["val_loss"][0]
    assert hist["val_acc"][-1] > 0.9
    assert {"train_loss", "train_acc", "lr", "time"} <= set(hist.columns)


def test_evaluate_matches_manual_computation():
    x, y = _problem(1, 50)
    model = nn.Linear(5, 2)
    res = evaluate(model, TensorLoader(x, y, batch_size=7), nn.functional.cross_entropy)
    with torch.no_grad():
        out = model(x)
    assert res["loss"] == pytest.approx(float(nn.functional.cross_entropy(out, y)), rel=1e-6)
    assert res["acc"] == pytest.approx(float((out.argmax(1) == y).float().mean()))


def test_callback_hook_order_and_stop():
    calls = []

    class Spy:
        def __getattr__(self, name):
            if name.startswith("on_"):
                return lambda state: calls.append(name)
            raise AttributeError(name)

    class StopAfterTwo:
        def on_epoch_end(self, state):
            if state.epoch == 2:
                state.request_stop("enough")

    x, y = _problem()
    model = nn.Linear(5, 2)
    hist = fit(model, TensorLoader(x, y, batch_size=64), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               loss_fn=nn.functional.cross_entropy, epochs=10, callbacks=[Spy(), StopAfterTwo()])
    assert len(hist) == 2
    assert hist.meta["stop_reason"] == "enough"
    assert calls[:6] == ["on_fit_start", "on_epoch_start", "on_after_backward", "on_before_step",
                         "on_step_end", "on_epoch_end"]
    assert calls[-1] == "on_fit_end"


def test_non_finite_loss_stops_cleanly():
    x, y = _problem()
    model = nn.Linear(5, 2)

    def loss_fn(out, target):
        loss = nn.functional.cross_entropy(out, target)
        return loss * math.inf if model.weight.grad is not None else loss

    hist = fit(model, TensorLoader(x, y, batch_size=16), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               loss_fn=loss_fn, epochs=5)
    assert "non-finite" in hist.meta["stop_reason"]
    assert len(hist) == 1 and hist["step"][-1] == 1
    assert torch.isfinite(model.weight).all()


def test_eval_train_uses_eval_mode():
    x, y = _problem()
    model = nn.Sequential(nn.Linear(5, 32), nn.Dropout(0.5), nn.Linear(32, 2))
    loader = TensorLoader(x, y, batch_size=64)
    hist = fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
               loss_fn=nn.functional.cross_entropy, epochs=1, eval_train=loader)
    ref = evaluate(model, loader, nn.functional.cross_entropy)
    assert hist["train_loss"][-1] == pytest.approx(ref["loss"])
    assert "train_loss_running" in hist


def test_lr_scheduler_callback_and_continuation():
    x, y = _problem()
    model = nn.Linear(5, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = LRScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    hist = fit(model, TensorLoader(x, y, batch_size=64), optimizer=opt, loss_fn=nn.functional.cross_entropy,
               epochs=3, callbacks=[sched])
    assert hist["lr"] == [1.0, 0.5, 0.25]
    hist = fit(model, TensorLoader(x, y, batch_size=64), optimizer=opt, loss_fn=nn.functional.cross_entropy,
               epochs=2, history=hist)
    assert hist["epoch"] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="interval"):
        LRScheduler(sched.scheduler, interval="batch")


@pytest.mark.parametrize("kwargs, name", [({"epochs": -1}, "epochs"), ({"epochs": 1, "clip_grad_norm": 0}, "clip_grad_norm")])
def test_fit_bad_arguments(kwargs, name):
    model = nn.Linear(5, 2)
    with pytest.raises(ValueError, match=name):
        fit(model, [], optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=nn.functional.cross_entropy, **kwargs)


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_history_round_trip(tmp_path, suffix):
    h = History([{"epoch": 1, "train_loss": 0.5, "val_loss": 0.7}, {"epoch": 2, "train_loss": 0.25, "val_loss": 0.75}],
                meta={"setting": "none"})
    path = h.save(tmp_path / f"h{suffix}")
    back = History.load(path)
    assert back.records == h.records
    if suffix == ".json":
        assert back.meta == h.meta
    with pytest.raises(KeyError, match="val_acc"):
        back["val_acc"]
    with pytest.raises(ValueError, match="path"):
        h.save(tmp_path / "h.txt")


def test_on_checkpoint_runs_after_every_on_epoch_end():
    calls = []

    class Late:
        def on_checkpoint(self, state):
            calls.append(("checkpoint", state.epoch, state.stop))

    class Stopper:
        def on_epoch_end(self, state):
            calls.append(("epoch_end", state.epoch))
            if state.epoch == 2:
                state.request_stop("done")

    x, y = _problem()
    model = nn.Linear(5, 2)
    fit(model, TensorLoader(x, y, batch_size=64), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.functional.cross_entropy, epochs=5, callbacks=[Late(), Stopper()])
    assert calls == [("epoch_end", 1), ("checkpoint", 1, False), ("epoch_end", 2), ("checkpoint", 2, True)]


def test_loop_state_round_trip_includes_rng_loader_and_callbacks():
    import random

    import numpy as np

    from reglab.loop import LoopState

    class Counter:
        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, state):
            self.n = state["n"]

    x, y = _problem()
    model = nn.Linear(5, 2)
    loader = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3)
    next(iter(loader))
    counter = Counter()
    counter.n = 7
    hist = History([{"epoch": 1, "step": 8}])
    state = LoopState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), history=hist,
                      epoch=1, step=8, callbacks=[counter], train_data=loader)
    saved = state.state_dict()
    expected = (torch.rand(3), np.random.rand(3), random.random(), next(iter(loader))[1])

    loader2 = TensorLoader(x, y, batch_size=8, shuffle=True, seed=99)
    counter2 = Counter()
    state2 = LoopState(model=model, optimizer=state.optimizer, history=History(), callbacks=[counter2],
                       train_data=loader2)
    state2.load_state_dict(saved)
    assert (state2.epoch, state2.step, counter2.n, state2.history.records) == (1, 8, 7, hist.records)
    got = (torch.rand(3), np.random.rand(3), random.random(), next(iter(loader2))[1])
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert torch.equal(got[3], expected[3])
    with pytest.raises(ValueError, match="no state for callbacks"):
        LoopState(model=model, optimizer=state.optimizer, history=History(), callbacks=[Counter(), Counter()]
                  ).load_state_dict(saved)
