import json
import math

import pytest
import torch
from torch import nn

from reglab.data import TensorLoader, load_digits, make_polynomial
from reglab.diagnosis import Diagnosis, diagnose, read_curves
from reglab.loop import History, fit

LN10 = math.log(10)


# --- real curves from short training runs --------------------------------------------------


def _digits_history(*, noise, hidden, epochs, lr, n_train, batch_size, dropout=0.0, weight_decay=0.0):
    torch.manual_seed(0)
    data = load_digits(n_train=n_train, n_val=300, noise=noise, seed=0)
    model = nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 10),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return fit(
        model,
        TensorLoader(data.train.x, data.train.y, batch_size=batch_size, shuffle=True, seed=0),
        optimizer=opt,
        loss_fn=nn.functional.cross_entropy,
        epochs=epochs,
        eval_sets={"val": TensorLoader(data.val.x, data.val.y, batch_size=4096)},
        eval_train=TensorLoader(data.train.x, data.train.y, batch_size=4096),
    )


@pytest.fixture(scope="module")
def memorizing_run():
    # 30 % of 200 labels flipped, a wide MLP and Adam: the noisy labels get memorized.
    return _digits_history(noise=0.3, hidden=128, epochs=40, lr=3e-3, n_train=200, batch_size=50)


@pytest.fixture(scope="module")
def regularized_run():
    # clean labels, 1000 examples, dropout 0.5 and decoupled weight decay 1.0 (AdamW)
    return _digits_history(
        noise=0.0, hidden=64, epochs=30, lr=1e-2, n_train=1000, batch_size=100, dropout=0.5, weight_decay=1.0
    )


@pytest.fixture(scope="module")
def linear_polynomial_run():
    # D2L 3.6: a linear function (features 1, x) fitted to a cubic: too little capacity
    data = make_polynomial(n_train=100, n_test=100, seed=0)
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    hist = fit(
        model,
        TensorLoader(data.train.x[:, :2], data.train.y, batch_size=10, shuffle=True),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        loss_fn=nn.functional.mse_loss,
        epochs=40,
        eval_sets={"val": TensorLoader(data.test.x[:, :2], data.test.y, batch_size=100)},
        eval_train=TensorLoader(data.train.x[:, :2], data.train.y, batch_size=100),
    )
    return hist, float(data.train.y.var())


def test_memorizing_noisy_digits_is_overfitting(memorizing_run):
    h = memorizing_run
    d = diagnose(h["train_loss"], h["val_loss"], baseline_loss=LN10, train_metric=h["train_acc"], val_metric=h["val_acc"])
    assert d.regime == "overfitting"
    assert d.rule == "val_loss_rising"
    vl = h["val_loss"]
    # the best epoch is where the validation loss bottoms out, well before the end
    assert d.best_epoch < 25
    assert min(vl) <= vl[d.best_epoch - 1] <= min(vl) + 0.05
    assert d.evidence["val_rise_rel"] >= 0.1
    assert d.gap_final > d.gap_at_best > -0.1
    assert d.gap_trend == "widening"
    assert f"after epoch {d.best_epoch}" in d.advice[0] and "weight decay" in d.advice[0]
    assert "metric_gap_final" in d.evidence


def test_linear_model_on_polynomial_is_underfitting(linear_polynomial_run):
    h, variance = linear_polynomial_run
    d = diagnose(h["train_loss"], h["val_loss"], baseline_loss=variance)
    assert d.regime == "underfitting"
    assert d.rule == "train_loss_high"
    assert d.evidence["train_to_baseline"] == pytest.approx(h["train_loss"][-1] / variance, rel=0.05)
    assert "larger model" in d.advice[0]


def test_regularized_run_is_good_fit(regularized_run):
    h = regularized_run
    d = diagnose(h["train_loss"], h["val_loss"], baseline_loss=LN10)
    assert d.regime == "good_fit", d.evidence
    # not near any threshold: no late rise, a small gap, a training loss that stopped falling
    assert d.evidence["val_rise_rel"] < 0.05
    assert d.evidence["gap_rel_final"] < 0.4 and d.gap_trend != "widening"
    assert d.evidence["train_change_after_best"] > -0.1 * d.evidence["train_loss_final"]
    assert h["val_acc"][-1] > 0.9


# --- synthetic curves with known answers ---------------------------------------------------


def _healthy(n=60, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    e = torch.arange(n, dtype=torch.float64)
    train = 0.25 + 2.0 * torch.exp(-e / 6)
    val = 0.32 + 2.0 * torch.exp(-e / 6)
    if noise:
        train = train * (1 + noise * torch.randn(n, generator=g, dtype=torch.float64))
        val = val * (1 + noise * torch.randn(n, generator=g, dtype=torch.float64))
    return train.tolist(), val.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_but_healthy_curve_is_good_fit(seed):
    train, val = _healthy(noise=0.05, seed=seed)
    d = diagnose(train, val, baseline_loss=LN10)
    assert d.regime == "good_fit", d.evidence
    assert d.evidence["val_noise"] > 0.005


def test_spike_does_not_change_the_verdict_and_is_reported():
    train, val = _healthy()
    val[30] *= 4.0
    train[30] *= 3.0
    d = diagnose(train, val, baseline_loss=LN10)
    assert d.regime == "good_fit"
    assert [s.split(" (")[0] for s in d.evidence["spikes"]] == ["train epoch 31", "val epoch 31"]
    assert any("spiked at epoch 31" in a for a in d.advice)
    clean = diagnose(*_healthy(), baseline_loss=LN10)
    assert clean.evidence["spikes"] == [] and not any("spiked" in a for a in clean.advice)


def test_still_improving_is_underfitting():
    e = range(20)
    train = [0.05 + 2.0 * math.exp(-k / 15) for k in e]
    val = [0.1 + 2.0 * math.exp(-k / 15) for k in e]
    d = diagnose(train, val, baseline_loss=10.0)
    assert (d.regime, d.rule) == ("underfitting", "still_improving")
    assert "train longer" in d.advice[0]


def test_widening_gap_without_rising_validation_is_overfitting():
    n = 30
    train = [0.6 * 0.9**k for k in range(n)]  # still falling towards zero
    val = [0.8 + 0.4 * 0.7**k + 0.002 * k for k in range(n)]  # flat, drifting up by < 10 %
    d = diagnose(train, val, baseline_loss=LN10)
    assert d.evidence["val_rise_rel"] < 0.1
    assert (d.regime, d.rule) == ("overfitting", "gap_widening")
    assert d.gap_trend == "widening" and "still widening" in d.advice[0]
    # the same validation curve with a training loss that keeps pace is a good fit
    d2 = diagnose([v - 0.1 for v in val], val, baseline_loss=10.0)
    assert d2.regime == "good_fit" and d2.gap_trend == "stable"


def test_stalled_validation_with_falling_training_loss_is_overfitting():
    n = 40
    train = [0.8 + 1.5 * 0.9**k for k in range(n)]  # memorizing noisy labels: still falling, still high
    val = [1.5 + 0.8 * 0.8**k for k in range(15)] + [1.5 + 0.8 * 0.8**15 + 0.002 * k for k in range(n - 15)]
    d = diagnose(train, val, baseline_loss=LN10)
    assert d.evidence["val_rise_rel"] < 0.1 and d.evidence["train_to_baseline"] > 0.25
    assert (d.regime, d.rule) == ("overfitting", "val_stalled")
    assert f"after epoch {d.best_epoch}" in d.advice[0]
    # the same validation curve with a flat training loss is a capacity problem instead
    flat = diagnose([1.2] * n, val, baseline_loss=LN10)
    assert (flat.regime, flat.rule) == ("underfitting", "train_loss_high")


def test_accuracy_still_improving_while_loss_rises_adds_overconfidence_advice():
    n = 40
    train = [2.0 * 0.85**k for k in range(n)]
    val = [max(2.0 * 0.85**k, 0.5) + 0.02 * max(0, k - 9) for k in range(n)]  # best ~ epoch 9
    train_acc = [min(1.0, 0.3 + 0.03 * k) for k in range(n)]
    rising_acc = [0.3 + 0.015 * k for k in range(n)]  # best at the end
    d = diagnose(train, val, baseline_loss=LN10, train_metric=train_acc, val_metric=rising_acc)
    assert d.regime == "overfitting"
    assert d.evidence["val_metric_best_epoch"] >= n - 2
    assert d.evidence["metric_gap_final"] == pytest.approx(train_acc[-1] - rising_acc[-1])
    assert any("over-confident" in a for a in d.advice)
    peaked_acc = [0.3 + 0.05 * min(k, 9) for k in range(n)]  # accuracy peaks with the loss
    d2 = diagnose(train, val, baseline_loss=LN10, train_metric=train_acc, val_metric=peaked_acc)
    assert d2.regime == "overfitting" and not any("over-confident" in a for a in d2.advice)


def test_short_curve_is_insufficient_data():
    d = diagnose([1.0, 0.8, 0.7], [1.1, 0.9, 0.85])
    assert d.regime == "insufficient_data"
    assert d.best_epoch is None and d.advice


def test_missing_baseline_is_stated_and_non_finite_epochs_dropped():
    train, val = _healthy(n=30)
    val[5] = math.nan
    d = diagnose(train, val)
    assert d.epochs == 29
    assert any("baseline_loss" in a for a in d.assumptions)
    assert any("non-finite" in a for a in d.assumptions)
    assert d.baseline_loss == pytest.approx(max(train[0], val[0]))


def test_diagnosis_serializes():
    d = diagnose(*_healthy(), baseline_loss=LN10)
    data = json.loads(json.dumps(d.to_dict()))
    assert data["regime"] == d.regime and data["best_epoch"] == d.best_epoch
    assert d.gap == d.gap_final
    assert d.regime in str(d)
    assert isinstance(d, Diagnosis)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train_loss=[1.0] * 6, val_loss=[1.0] * 5), "same length"),
        (dict(train_loss=[1.0] * 6, val_loss=[1.0] * 6, baseline_loss=0.0), "baseline_loss=0.0"),
        (dict(train_loss=[1.0] * 6, val_loss=[1.0] * 6, baseline_loss=-1), "baseline_loss=-1"),
        (dict(train_loss="abc", val_loss=[1.0] * 3), "train_loss='abc'"),
        (dict(train_loss=[1.0] * 6, val_loss=[1.0] * 6, val_metric=[1.0]), "val_metric"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        diagnose(**kwargs)


# --- reading histories ---------------------------------------------------------------------


def test_read_curves_reglab_history(tmp_path, memorizing_run):
    for suffix in (".csv", ".json"):
        path = memorizing_run.save(tmp_path / f"h{suffix}")
        curves = read_curves(path)
        assert curves["train_loss"] == pytest.approx(memorizing_run["train_loss"])
        assert curves["val_loss"] == pytest.approx(memorizing_run["val_loss"])
        assert curves["val_metric"] == pytest.approx(memorizing_run["val_acc"])


def test_read_curves_lightning_csv(tmp_path):
    lines = ["epoch,step,train_loss,val_loss,val_acc,train_acc"]
    step = 0
    for epoch in range(6):
        for _ in range(2):  # per-step training rows
            step += 1
            lines.append(f"{epoch},{step},{1.0 / (epoch + 1) + 0.1},,,")
        lines.append(f"{epoch},{step},,{1.2 / (epoch + 1)},{0.5 + 0.05 * epoch},")
        lines.append(f"{epoch},{step},,,,{0.6 + 0.05 * epoch}")
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(lines) + "\n")
    curves = read_curves(path)
    assert curves["train_loss"] == pytest.approx([1.0 / (e + 1) + 0.1 for e in range(6)])
    assert curves["val_loss"] == pytest.approx([1.2 / (e + 1) for e in range(6)])
    assert curves["val_metric"] == pytest.approx([0.5 + 0.05 * e for e in range(6)])


def test_read_curves_keras_json_and_errors(tmp_path):
    path = tmp_path / "keras.json"
    path.write_text(json.dumps({"loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.6], "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}))
    curves = read_curves(path)
    assert curves["train_loss"] == [1.0, 0.5, 0.3] and curves["val_loss"] == [1.1, 0.7, 0.6]
    assert curves["train_metric"] == [0.5, 0.7, 0.8] and curves["train_key"] == "loss"
    with pytest.raises(ValueError, match="path must end in .json or .csv"):
        read_curves(tmp_path / "x.txt")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"loss": [1.0]}))
    with pytest.raises(ValueError, match="validation loss"):
        read_curves(bad)
    with pytest.raises(ValueError, match="column 'nope' not found"):
        read_curves(path, val_key="nope")
    h = History([{"epoch": 1, "tl": 1.0, "vl": 2.0}])
    assert read_curves(h.save(tmp_path / "c.json"), train_key="tl", val_key="vl")["val_loss"] == [2.0]


def test_reglab_diagnose_is_the_function_after_importing_its_module():
    import reglab
    import reglab.diagnosis  # noqa: F401

    train, val = _healthy()
    assert reglab.diagnose is diagnose
    assert reglab.diagnose(train, val, baseline_loss=LN10).to_dict() == diagnose(train, val, baseline_loss=LN10).to_dict()


def test_rising_validation_loss_below_training_loss_is_not_overfitting():
    # a high-bias model: training loss stays far above validation loss while the validation
    # loss wanders up after its first epochs; the training loss is most of the baseline's
    train = [60.0, 45.0, 42.0, 41.5, 41.2, 41.1, 41.0, 41.0, 41.0, 41.0, 41.0, 41.0]
    val = [13.0, 12.0, 12.2, 12.6, 13.0, 13.4, 13.8, 14.0, 14.2, 14.4, 14.5, 14.5]
    d = diagnose(train, val, baseline_loss=60.0)
    assert d.regime == "underfitting" and d.rule == "train_loss_high"
    # the same validation curve above a low training loss is overfitting
    low = [t / 20 for t in train]
    assert diagnose(low, val, baseline_loss=60.0).regime == "overfitting"
