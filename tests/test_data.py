import pytest
import torch

from reglab.data import TensorLoader, flip_labels, load_digits, make_high_dim_regression, make_polynomial


def test_flip_labels_flips_exact_count_to_other_classes():
    y = torch.arange(1000) % 10
    g = torch.Generator().manual_seed(1)
    noisy, mask = flip_labels(y, 10, 0.2, generator=g)
    assert int(mask.sum()) == 200
    assert bool((noisy[mask] != y[mask]).all())
    assert bool((noisy[~mask] == y[~mask]).all())
    assert noisy.min() >= 0 and noisy.max() <= 9


@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan")])
def test_flip_labels_rejects_bad_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        flip_labels(torch.zeros(4, dtype=torch.long), 10, rate, generator=torch.Generator())


def test_load_digits_splits_and_noise():
    d = load_digits(n_train=400, n_val=200, noise=0.3, seed=3)
    assert len(d.train) == 400 and len(d.val) == 200 and len(d.test) == 1797 - 600
    assert d.train.x.max() <= 1.0 and d.train.x.min() >= 0.0
    assert int(d.noisy_mask.sum()) == 120
    assert float((d.train.y != d.train_clean_y).float().mean()) == pytest.approx(0.3)
    again = load_digits(n_train=400, n_val=200, noise=0.3, seed=3)
    assert torch.equal(again.train.y, d.train.y)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"noise": 1.5}, "noise"), ({"n_train": 0}, "n_train"), ({"n_train": 1500, "n_val": 400}, "n_train")],
)
def test_load_digits_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_digits(**kwargs)


def test_tensor_loader_resumes_batch_order():
    x = torch.arange(10.0)
    loader = TensorLoader(x, x, batch_size=3, shuffle=True, seed=5)
    first = [b[0].tolist() for b in loader]
    assert len(first) == 4 and sorted(sum(first, [])) == x.tolist()
    state = loader.state_dict()
    expected = [b[0].tolist() for b in loader]
    other = TensorLoader(x, x, batch_size=3, shuffle=True, seed=99)
    other.load_state_dict(state)
    assert [b[0].tolist() for b in other] == expected


def test_tensor_loader_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(torch.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="first dimension"):
        TensorLoader(torch.zeros(3), torch.zeros(4), batch_size=1)


def test_high_dim_regression_matches_generating_model():
    d = make_high_dim_regression(n_train=20, n_test=2000, dim=200, noise_std=0.01, seed=0)
    assert d.train.x.shape == (20, 200) and d.train.y.shape == (20, 1)
    resid = d.test.y - (d.test.x @ d.true_w + d.true_b)
    assert float(resid.std()) == pytest.approx(0.01, rel=0.1)
    with pytest.raises(ValueError, match="dim"):
        make_high_dim_regression(dim=0)


def test_polynomial_features_and_targets():
    d = make_polynomial(max_degree=20, n_train=100, n_test=100, noise_std=0.0, seed=1)
    x = d.train.x[:, 1]
    assert torch.allclose(d.train.x[:, 0], torch.ones(100))
    assert torch.allclose(d.train.x[:, 3], x**3 / 6, rtol=1e-5, atol=1e-6)
    expected = 5 + 1.2 * x - 3.4 * x**2 / 2 + 5.6 * x**3 / 6
    assert torch.allclose(d.train.y[:, 0], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="max_degree"):
        make_polynomial(max_degree=2)
