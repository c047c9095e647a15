import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reglab.augment import Augmented, default_policy
from reglab.augment.image import Compose, RandomAffine, RandomErasing, RandomShift
from reglab.data import TensorLoader
from reglab.loop import fit


def _shifted(img, dy, dx, fill=0.0):
    """Reference: translate (C, H, W) by (dy, dx) whole pixels, filling the border."""
    c, h, w = img.shape
    out = torch.full_like(img, fill)
    src = img[:, max(-dy, 0): h - max(dy, 0), max(-dx, 0): w - max(dx, 0)]
    out[:, max(dy, 0): max(dy, 0) + src.shape[1], max(dx, 0): max(dx, 0) + src.shape[2]] = src
    return out


def test_random_shift_is_a_whole_pixel_translation():
    torch.manual_seed(0)
    x = torch.rand(32, 2, 6, 7) + 1.0
    out = RandomShift(2, fill=-1.0)(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    seen = set()
    for img, res in zip(x, out):
        matches = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(res, _shifted(img, dy, dx, -1.0))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5  # shifts vary per sample
    assert torch.equal(RandomShift(0)(x), x)
    with pytest.raises(ValueError, match="max_shift=-1"):
        RandomShift(-1)


def test_random_affine_against_rot90_and_identity():
    x = torch.rand(3, 2, 5, 5)
    out = RandomAffine(degrees=(90, 90))(x)
    assert torch.allclose(out, torch.rot90(x, 1, (2, 3)), atol=1e-5)
    out = RandomAffine(degrees=(-90, -90))(x)
    assert torch.allclose(out, torch.rot90(x, -1, (2, 3)), atol=1e-5)
    assert torch.allclose(RandomAffine(degrees=0)(x), x, atol=1e-6)
    # 180 degrees on a non-square image: rotation in pixel units, no shear
    rect = torch.rand(2, 1, 4, 6)
    assert torch.allclose(RandomAffine(degrees=(180, 180))(rect), torch.flip(rect, (2, 3)), atol=1e-5)
    # zooming out by 2 keeps the centre value and fills the border
    img = torch.ones(1, 1, 8, 8)
    zoomed = RandomAffine(degrees=0, scale=(0.5, 0.5), fill=0.25)(img)
    assert float(zoomed[0, 0, 0, 0]) == pytest.approx(0.25) and float(zoomed[0, 0, 4, 4]) == pytest.approx(1.0)


def test_random_affine_per_sample_and_reproducible():
    x = torch.rand(16, 1, 8, 8)
    aff = RandomAffine(15, scale=(0.9, 1.1))
    a = aff(x, generator=torch.Generator().manual_seed(5))
    b = aff(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    same = RandomAffine(15)(x[:1].expand(16, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(same[0], same[1])  # a different draw per sample
    for kwargs, msg in ((dict(degrees=-5), "degrees=-5"), (dict(degrees=(10, 5)), "degrees"),
                        (dict(scale=(0.0, 1.0)), "scale")):
        with pytest.raises(ValueError, match=msg):
            RandomAffine(**kwargs)


def test_random_erasing_rectangles():
    x = torch.ones(200, 3, 8, 8)
    er = RandomErasing(p=0.5, scale=(0.05, 0.3), ratio=(0.5, 2.0), value=0.0)
    out = er(x, generator=torch.Generator().manual_seed(0))
    erased = out[:, 0] == 0
    counts = erased.flatten(1).sum(1)
    frac = float((counts > 0).float().mean())
    assert 0.4 < frac < 0.6
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # all channels
    for m in erased[counts > 0]:
        rows = m.any(1).nonzero().flatten()
        cols = m.any(0).nonzero().flatten()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(m.sum()) == h * w  # a filled rectangle
        assert 1 <= h * w <= round(0.3 * 64 * 2)  # rounding can at most double a small area
    assert torch.equal(RandomErasing(p=0.0)(x), x)
    for kwargs, msg in ((dict(p=1.5), "p=1.5"), (dict(scale=(0.5, 1.5)), "scale"), (dict(ratio=(0, 1)), "ratio")):
        with pytest.raises(ValueError, match=msg):
            RandomErasing(**kwargs)


def test_default_policy_on_flat_digits_and_state():
    x = torch.rand(64, 64)
    policy = default_policy((8, 8), seed=3)
    state = policy.state_dict()
    a = policy(x)
    policy.load_state_dict(state)
    b = policy(x)
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, x)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 + 1e-6  # bilinear stays in range
    off = default_policy((8, 8), max_shift=0, degrees=0, scale=(1.0, 1.0), erase_p=0.0)
    assert torch.allclose(off(x, generator=torch.Generator().manual_seed(0)), x, atol=1e-6)
    imgs = torch.rand(4, 1, 8, 8)
    assert default_policy()(imgs).shape == imgs.shape
    assert default_policy()(imgs[:, 0]).shape == (4, 8, 8)
    with pytest.raises(ValueError, match="image_size=None"):
        default_policy()(x)
    with pytest.raises(ValueError, match=r"image_size=\(8,\)"):
        Compose([], image_size=(8,))
    with pytest.raises(ValueError, match="erase_p=2.0"):
        default_policy(erase_p=2.0)  # named as the caller wrote it
    with pytest.raises(ValueError, match="erase_scale"):
        default_policy(erase_scale=(0.5, 0.1))


def test_augmented_loader_with_fit_and_resume():
    torch.manual_seed(0)
    x = torch.rand(48, 64)
    y = torch.randint(0, 10, (48,))
    train = Augmented(TensorLoader(x, y, batch_size=16, shuffle=True), default_policy((8, 8)), seed=1)
    state = train.state_dict()
    first = [b[0].clone() for b in train]
    train.load_state_dict(state)
    assert all(torch.equal(a, b[0]) for a, b in zip(first, train))
    assert len(train) == 3
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    hist = fit(net, train, optimizer=torch.optim.Adam(net.parameters(), 1e-2), loss_fn=F.cross_entropy, epochs=2)
    assert len(hist) == 2
    with pytest.raises(ValueError, match="transform="):
        Augmented([], "policy")
