import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reglab
from reglab.data import TensorLoader
from reglab.loop import fit
from reglab.targets import (
    CutMix,
    DoubleSmoothingWarning,
    Mixup,
    SoftTargetCrossEntropy,
    SoftTargets,
    smooth_labels,
    soft_target_cross_entropy,
)


def test_public_name():
    assert reglab.smooth_labels is smooth_labels


@pytest.mark.parametrize("k", [2, 10, 1000])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_smoothing_matches_torch_label_smoothing(k, eps):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(64, k, generator=g) * 3
    y = torch.randint(0, k, (64,), generator=g)
    ref = nn.CrossEntropyLoss(label_smoothing=eps)(logits, y)
    ours = soft_target_cross_entropy(logits, smooth_labels(y, k, eps))
    assert abs(float(ours) - float(ref)) < 1e-6
    # and in float64, tighter
    ref64 = F.cross_entropy(logits.double(), y, label_smoothing=eps)
    ours64 = soft_target_cross_entropy(logits.double(), smooth_labels(y, k, eps, dtype=torch.float64))
    assert abs(float(ours64) - float(ref64)) < 1e-12
    # per-sample losses too, against the closed form (1-ε)·NLL + ε·mean(-log p)
    logp = logits.double().log_softmax(1)
    closed = (1 - eps) * -logp.gather(1, y[:, None])[:, 0] + eps * -logp.mean(1)
    per = soft_target_cross_entropy(logits.double(), smooth_labels(y, k, eps, dtype=torch.float64), reduction="none")
    assert torch.allclose(per, closed, atol=1e-12)


def test_smooth_labels_values_and_probability_input():
    out = smooth_labels(torch.tensor([1, 0]), 4, 0.2)
    assert torch.allclose(out, torch.tensor([[0.05, 0.85, 0.05, 0.05], [0.85, 0.05, 0.05, 0.05]]))
    assert torch.allclose(out.sum(1), torch.ones(2))
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert torch.allclose(smooth_labels(probs, 4, 0.2), torch.tensor([[0.45, 0.45, 0.05, 0.05]]))
    assert torch.equal(smooth_labels(torch.tensor([2]), 3, 1.0), torch.full((1, 3), 1 / 3))
    # smoothing is linear: smoothing a mixture equals mixing smoothed targets
    a, b = smooth_labels(torch.tensor([0]), 5, 0.1), smooth_labels(torch.tensor([3]), 5, 0.1)
    mixed = smooth_labels(0.3 * F.one_hot(torch.tensor([0]), 5).float() + 0.7 * F.one_hot(torch.tensor([3]), 5).float(), 5, 0.1)
    assert torch.allclose(mixed, 0.3 * a + 0.7 * b)


def test_smooth_labels_validates():
    with pytest.raises(ValueError, match="eps=1.5"):
        smooth_labels(torch.tensor([0]), 3, 1.5)
    with pytest.raises(ValueError, match="num_classes=1"):
        smooth_labels(torch.tensor([0]), 1, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        smooth_labels(torch.tensor([3]), 3, 0.1)
    with pytest.raises(ValueError, match="num_classes=3 columns"):
        smooth_labels(torch.rand(2, 4), 3, 0.1)
    with pytest.raises(ValueError, match="label_smoothing=-0.1"):
        SoftTargetCrossEntropy(label_smoothing=-0.1)
    with pytest.raises(ValueError, match="reduction='avg'"):
        SoftTargetCrossEntropy(reduction="avg")


def test_loss_warns_when_smoothing_twice():
    y = torch.tensor([0, 1, 2])
    logits = torch.randn(3, 3)
    smoothed = smooth_labels(y, 3, 0.1)
    with pytest.warns(DoubleSmoothingWarning, match="already smoothed"):
        SoftTargetCrossEntropy(label_smoothing=0.1)(logits, smoothed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SoftTargetCrossEntropy()(logits, smoothed)  # smoothing once: no warning
        SoftTargetCrossEntropy(label_smoothing=0.1)(logits, y)  # loss smooths indices: fine
        SoftTargetCrossEntropy(label_smoothing=0.1)(logits, F.one_hot(y, 3).float())  # one-hot: fine


def test_mixup_closed_form_and_reproducible():
    x = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mix = Mixup(num_classes=3, alpha=0.4)
    xm, ym = mix(x, y, generator=torch.Generator().manual_seed(7))
    lam = mix.last_lam
    assert 0.0 <= lam <= 1.0
    onehot = F.one_hot(y, 3).float()
    assert torch.allclose(xm, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)
    assert torch.allclose(ym, lam * onehot + (1 - lam) * onehot.roll(1, 0), atol=1e-6)
    xm2, ym2 = Mixup(3, 0.4)(x, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(xm, xm2) and torch.equal(ym, ym2)
    # λ ~ Beta(α, α): mean 1/2, variance 1/(4(2α+1))
    g = torch.Generator().manual_seed(0)
    lams = []
    for _ in range(2000):
        mix(x, y, generator=g)
        lams.append(mix.last_lam)
    mean = sum(lams) / len(lams)
    var = sum((v - mean) ** 2 for v in lams) / len(lams)
    assert abs(mean - 0.5) < 0.03 and abs(var - 1 / (4 * 1.8)) < 0.02
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="alpha="):
            Mixup(3, alpha=bad)


def test_cutmix_box_and_area_weights():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 2, 8, 8).clone()
    y = torch.tensor([0, 1, 2, 3])
    cut = CutMix(num_classes=4, alpha=1.0)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        xc, yc = cut(x, y, generator=g)
        top, left, bottom, right = cut.last_box
        area = (bottom - top) * (right - left)
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        for i in range(4):
            assert torch.all(xc[i][:, inside] == (i - 1) % 4)
            assert torch.all(xc[i][:, ~inside] == i)
            # the target weight of the pasted sample equals its share of the pixels
            assert math.isclose(float(yc[i, (i - 1) % 4]), area / 64, abs_tol=1e-6)
        assert math.isclose(cut.last_lam, 1 - area / 64)
        assert torch.allclose(yc.sum(1), torch.ones(4))


def test_cutmix_flat_images():
    x = torch.rand(3, 64)
    cut = CutMix(10, image_size=(8, 8))
    xc, yc = cut(x, torch.tensor([1, 2, 3]), generator=torch.Generator().manual_seed(0))
    assert xc.shape == (3, 64) and yc.shape == (3, 10)
    with pytest.raises(ValueError, match="image_size"):
        CutMix(10)(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"image_size=\(8, 0\)"):
        CutMix(10, image_size=(8, 0))


def test_soft_targets_loader_smooths_once_and_resumes():
    x = torch.randn(12, 4)
    y = torch.arange(12) % 3
    loader = TensorLoader(x, y, batch_size=4, shuffle=True, seed=1)
    data = SoftTargets(loader, 3, label_smoothing=0.2, mix=[Mixup(3, 0.5), Mixup(3, 2.0)], mix_prob=0.5, seed=4)
    state = data.state_dict()
    first = [(a.clone(), b.clone()) for a, b in data]
    for _, soft in first:
        assert soft.shape == (4, 3)
        assert torch.allclose(soft.sum(1), torch.ones(4))
        assert float(soft.min()) >= 0.2 / 3 - 1e-6  # smoothed exactly once: min is ε/K or more
    data.load_state_dict(state)
    second = list(data)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(first, second))
    # without mixing the targets are exactly smooth_labels of the indices
    plain = SoftTargets(TensorLoader(x, y, batch_size=12), 3, label_smoothing=0.2)
    (_, soft), = list(plain)
    assert torch.allclose(soft, smooth_labels(y, 3, 0.2))
    assert len(plain) == 1


def test_soft_targets_warns_about_loss_smoothing():
    loader = TensorLoader(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), batch_size=2)
    with pytest.warns(DoubleSmoothingWarning, match="CrossEntropyLoss"):
        SoftTargets(loader, 2, label_smoothing=0.1, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1))
    data = SoftTargets(loader, 2, label_smoothing=0.1)
    assert data.check_loss(SoftTargetCrossEntropy()) is True
    # in a real loop, the loss sees the smoothed tensors and warns
    net = nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.warns(DoubleSmoothingWarning):
        fit(net, data, optimizer=opt, loss_fn=SoftTargetCrossEntropy(label_smoothing=0.1), epochs=1)
    for kwargs, msg in (
        (dict(label_smoothing=2.0), "label_smoothing=2.0"),
        (dict(mix_prob=1.5), "mix_prob=1.5"),
        (dict(mix=[]), "mix="),
        (dict(mix=[3]), "mix="),
    ):
        with pytest.raises(ValueError, match=msg):
            SoftTargets(loader, 2, **kwargs)


def test_fit_with_mixup_and_cutmix_on_digits_shape():
    torch.manual_seed(0)
    x = torch.rand(32, 64)
    y = torch.randint(0, 10, (32,))
    data = SoftTargets(
        TensorLoader(x, y, batch_size=8, shuffle=True),
        10,
        label_smoothing=0.1,
        mix=[Mixup(10, 0.2), CutMix(10, image_size=(8, 8))],
    )
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss = SoftTargetCrossEntropy()
    hist = fit(net, data, optimizer=opt, loss_fn=loss, epochs=3,
               eval_sets={"val": TensorLoader(x, y, batch_size=16)})
    assert len(hist) == 3 and "val_acc" in hist.last  # eval with class indices works too
    assert math.isfinite(hist.last["train_loss"])
