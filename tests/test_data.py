import pytest
import torch

from reglab.data import TensorLoader, flip_labels, load_digits


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
