import math

import pytest
import torch
from torch import nn

from reglab.data import TensorLoader, load_digits
from reglab.loop import evaluate, fit
from reglab.stopping import EMA, EarlyStopping, StopReason

INF, NAN = math.inf, math.nan


def _run(stopper, values):
    """Feed values until the stopper says stop; return (stop epoch or None, decisions)."""
    decisions = []
    for v in values:
        decisions.append(stopper.step(v))
        if decisions[-1]:
            return len(decisions), decisions
    return None, decisions


# Each row: kwargs, values, expected stop epoch (None: never), best, best_epoch, reason.
TABLE = [
    # patience=p stops at the p-th consecutive epoch without improvement: t - t_best == p
    (dict(patience=1), [3, 2, 2.5], 3, 2, 2, StopReason.PATIENCE),
    (dict(patience=2), [3, 2, 2.5, 2.1], 4, 2, 2, StopReason.PATIENCE),
    (dict(patience=3), [3, 2, 2.5, 2.1, 1.9, 2, 2, 2], 8, 1.9, 5, StopReason.PATIENCE),
    # equal values are not improvements (strict)
    (dict(patience=2), [1, 1, 1], 3, 1, 1, StopReason.PATIENCE),
    # min_delta: must improve by MORE than min_delta
    (dict(patience=2, min_delta=0.5), [3, 2.5, 2.55], 3, 3, 1, StopReason.PATIENCE),  # exactly 0.5 is not more
    # 2.49 beats 3 by 0.51 (improvement), 2.4 only by 0.09 (wait 1), 1.9 by 0.59 (improvement)
    (dict(patience=2, min_delta=0.5), [3, 2.49, 2.4, 1.9], None, 1.9, 4, None),
    # mode max
    (dict(patience=2, mode="max"), [0.1, 0.5, 0.4, 0.5], 4, 0.5, 2, StopReason.PATIENCE),
    # baseline: the first improvement must beat it; never beating it -> BASELINE
    (dict(patience=2, baseline=1.0), [2, 1.5], 2, None, None, StopReason.BASELINE),
    (dict(patience=2, baseline=1.0), [2, 0.9, 1.5, 1.2], 4, 0.9, 2, StopReason.PATIENCE),
    (dict(patience=2, baseline=1.0), [1.0, 0.99, 0.98], None, 0.98, 3, None),
    # start_from_epoch: warm-up epochs are ignored entirely
    (dict(patience=1, start_from_epoch=2), [5, 6, 7, 8], 4, 7, 3, StopReason.PATIENCE),
    (dict(patience=2, start_from_epoch=2, baseline=1.0), [5, 6, 7, 8], 4, None, None, StopReason.BASELINE),
    # non-finite values stop at once, even during warm-up, best kept
    (dict(patience=5), [3, 2, NAN], 3, 2, 2, StopReason.NON_FINITE),
    (dict(patience=5), [3, INF], 2, 3, 1, StopReason.NON_FINITE),
    (dict(patience=5, start_from_epoch=3), [NAN], 1, None, None, StopReason.NON_FINITE),
    # check_finite=False: NaN is simply not an improvement
    (dict(patience=2, check_finite=False), [3, NAN, NAN], 3, 3, 1, StopReason.PATIENCE),
    # patience=None never stops on patience
    (dict(patience=None), [1, 2, 3, 4, 5, 6, 7, 8], None, 1, 1, None),
    (dict(patience=None), [1, 2, NAN], 3, 1, 1, StopReason.NON_FINITE),
]


@pytest.mark.parametrize("kwargs, values, stop, best, best_epoch, reason", TABLE)
def test_decision_table(kwargs, values, stop, best, best_epoch, reason):
    s = EarlyStopping(**kwargs)
    stop_epoch, _ = _run(s, values)
    assert stop_epoch == stop
    assert s.stopped_epoch == stop
    assert s.best == best
    assert s.best_epoch == best_epoch
    assert s.reason is reason
    if stop is not None:
        assert s.message.startswith(f"early stopping ({reason.value}): ")
        assert s.step(0.0) is True  # stays stopped, changes nothing
        assert s.best == best


def test_formal_criterion_matches_reference():
    """Random sequences: stop at the first t with t - argmin_{s<=t} v_s == p (Prechelt's criterion)."""
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        p = int(torch.randint(1, 5, (1,), generator=g))
        values = torch.randint(0, 6, (30,), generator=g).tolist()
        expected = None
        best, t_best = math.inf, 0
        for t, v in enumerate(values, 1):
            if v < best:
                best, t_best = v, t
            elif t - t_best >= p:
                expected = t
                break
        assert _run(EarlyStopping(patience=p), values)[0] == expected


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(patience=0), "patience=0"),
        (dict(patience=-1), "patience=-1"),
        (dict(patience=1.5), "patience=1.5"),
        (dict(mode="auto"), "mode='auto'"),
        (dict(min_delta=-0.1), "min_delta=-0.1"),
        (dict(baseline=math.nan), "baseline=nan"),
        (dict(start_from_epoch=-1), "start_from_epoch=-1"),
        (dict(monitor=""), "monitor=''"),
        (dict(sync="max"), "sync='max'"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("(", r"\(")):
        EarlyStopping(**kwargs)


def test_errors_are_collected():
    with pytest.raises(ValueError, match="patience=0.*min_delta=-1"):
        EarlyStopping(patience=0, min_delta=-1)


def test_best_weights_kept_on_cpu_and_restored():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    s = EarlyStopping(patience=2)
    snapshots = []
    for v in [3.0, 1.0, 2.0, 2.5]:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model.train()(torch.randn(8, 3))  # moves BatchNorm running stats too
        snapshots.append({k: t.clone() for k, t in model.state_dict().items()})
        if s.step(v, model):
            break
    assert s.stopped_epoch == 4 and s.best_epoch == 2
    assert all(t.device.type == "cpu" for t in s.best_state.values())
    weight = model[0].weight
    assert s.restore(model)
    assert model[0].weight is weight  # restored in place: optimizers keep working
    for k, t in model.state_dict().items():
        assert torch.equal(t, snapshots[1][k]), k


def test_snapshot_reuses_buffers():
    model = nn.Linear(3, 2)
    s = EarlyStopping(patience=3)
    s.step(2.0, model)
    first = s.best_state["weight"]
    with torch.no_grad():
        model.weight.mul_(2)
    s.step(1.0, model)
    assert s.best_state["weight"] is first
    assert torch.equal(first, model.weight)


def test_restore_without_improvement_returns_false():
    model = nn.Linear(2, 2)
    s = EarlyStopping(patience=1, baseline=0.0)
    s.step(1.0, model)
    assert not s.restore(model)


def test_state_dict_round_trip():
    model = nn.Linear(3, 2)
    a = EarlyStopping(patience=3, min_delta=0.01)
    for v in [3.0, 2.0, 2.5]:
        a.step(v, model)
    b = EarlyStopping(patience=3, min_delta=0.01)
    b.load_state_dict(a.state_dict())
    assert (b.best, b.best_epoch, b.wait, b.epoch) == (2.0, 2, 1, 3)
    assert torch.equal(b.best_state["weight"], a.best_state["weight"])
    # both continue identically
    for v in [2.6, 2.7]:
        assert a.step(v) == b.step(v)
    assert a.stopped_epoch == b.stopped_epoch == 5 and b.reason is StopReason.PATIENCE
    c = EarlyStopping()
    c.load_state_dict(a.state_dict())
    assert c.reason is StopReason.PATIENCE and c.step(0.0)


def _digits_problem(seed):
    data = load_digits(n_train=300, n_val=300, noise=0.3, seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    train = TensorLoader(data.train.x, data.train.y, batch_size=32, shuffle=True, seed=seed)
    sets = {
        "val": TensorLoader(data.val.x, data.val.y, batch_size=4096),
        "test": TensorLoader(data.test.x, data.test.y, batch_size=4096),
    }
    return data, model, opt, train, sets


def test_fit_callback_stops_and_restores_best():
    data, model, opt, train, sets = _digits_problem(0)
    stopper = EarlyStopping(monitor="val_loss", patience=3)
    hist = fit(model, train, optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=60,
               eval_sets=sets, callbacks=[stopper])
    vl = hist["val_loss"]
    best = min(range(len(vl)), key=vl.__getitem__) + 1
    assert stopper.best_epoch == best and stopper.best == vl[best - 1]
    assert len(hist) == stopper.stopped_epoch == best + 3 < 60
    assert "did not improve for 3 epochs" in hist.meta["stop_reason"]
    assert hist.meta["restored_epoch"] == best
    # the model now holds the best epoch's weights: its val loss is the recorded best
    assert evaluate(model, sets["val"], nn.functional.cross_entropy)["loss"] == pytest.approx(vl[best - 1], abs=1e-6)


def test_restore_best_also_without_early_stop():
    data, model, opt, train, sets = _digits_problem(1)
    stopper = EarlyStopping(monitor="val_loss", patience=None)
    hist = fit(model, train, optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=8,
               eval_sets=sets, callbacks=[stopper])
    assert "stop_reason" not in hist.meta and len(hist) == 8
    vl = hist["val_loss"]
    assert evaluate(model, sets["val"], nn.functional.cross_entropy)["loss"] == pytest.approx(min(vl), abs=1e-6)


def test_missing_monitor_is_a_clear_error():
    model = nn.Linear(64, 10)
    data = load_digits(n_train=50, n_val=50)
    with pytest.raises(KeyError, match="val_loss"):
        fit(model, TensorLoader(data.train.x, data.train.y, batch_size=50),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=nn.functional.cross_entropy,
            epochs=1, callbacks=[EarlyStopping()])


def test_restored_best_beats_final_epoch_under_label_noise():
    """Acceptance: 30% symmetric label noise, mean over 3 seeds, clean test accuracy."""
    final, restored, stopped = [], [], []
    for seed in range(3):
        data, model, opt, train, sets = _digits_problem(seed)
        stopper = EarlyStopping(monitor="val_loss", patience=None)  # track the best, never stop
        hist = fit(model, train, optimizer=opt, loss_fn=nn.functional.cross_entropy, epochs=25,
                   eval_sets=sets, callbacks=[stopper])
        final.append(hist["test_acc"][-1])  # the unstopped run's final epoch
        restored.append(evaluate(model, sets["test"], nn.functional.cross_entropy)["acc"])
        assert restored[-1] == pytest.approx(hist["test_acc"][stopper.best_epoch - 1])
        # a patience=5 stopper fed the same trajectory would have stopped well before the end
        p5 = EarlyStopping(patience=5)
        stopped.append(_run(p5, hist["val_loss"])[0])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean(restored) > mean(final) + 0.02, (restored, final)
    assert all(s is not None and s < 25 for s in stopped)


# ------------------------------------------------------------------------------------- EMA
def test_ema_matches_closed_form():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ema = EMA(model, decay=0.9)
    expected = None
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        w = model.weight.detach().clone()
        expected = w if expected is None else 0.9 * expected + 0.1 * w  # first update copies
    assert ema.num_updates == 5
    torch.testing.assert_close(ema.averaged.module.weight, expected, rtol=1e-6, atol=1e-6)


def test_ema_swap_restores_live_weights():
    model = nn.Linear(4, 3)
    ema = EMA(model, decay=0.5)
    ema.update()
    with torch.no_grad():
        model.weight.add_(1.0)
    live = model.weight.detach().clone()
    ema.update()
    with ema.swap() as m:
        assert m is model
        torch.testing.assert_close(model.weight, live - 0.5)
    assert torch.equal(model.weight, live)
    with pytest.raises(RuntimeError, match="boom"):
        with ema.swap(model):
            raise RuntimeError("boom")
    assert torch.equal(model.weight, live)


def test_ema_as_fit_callback_and_state_round_trip():
    x = torch.randn(32, 4)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(4, 1)
    ema = EMA(model, decay=0.8)
    fit(model, TensorLoader(x, y, batch_size=8), optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        loss_fn=nn.functional.mse_loss, epochs=2, callbacks=[ema])
    assert ema.num_updates == 8
    other = EMA(nn.Linear(4, 1), decay=0.8)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 8
    assert torch.equal(other.averaged.module.weight, ema.averaged.module.weight)
    with pytest.raises(ValueError, match="decay"):
        EMA(nn.Linear(4, 1), decay=0.5).load_state_dict(ema.state_dict())


@pytest.mark.parametrize("decay", [-0.1, 1.0, 2, True])
def test_ema_bad_decay(decay):
    with pytest.raises(ValueError, match=f"decay={decay!r}"):
        EMA(nn.Linear(2, 2), decay=decay)
