"""Embedded datasets and a small, resumable tensor batcher.

Every dataset here ships with the code or with an installed package (scikit-learn's
digits) or is generated from a seed: nothing is downloaded at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

__all__ = [
    "Split",
    "DigitsData",
    "TensorLoader",
    "RegressionData",
    "flip_labels",
    "load_digits",
    "make_high_dim_regression",
    "make_polynomial",
]


def _check_fraction(name: str, value: float, *, upper_inclusive: bool = False) -> None:
    ok = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
    if not (isinstance(value, (int, float)) and ok):
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be in {bound}; received {name}={value!r}")


def flip_labels(
    labels: torch.Tensor, num_classes: int, rate: float, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric label noise: a fraction ``rate`` of labels is replaced by a *different* class.

    Exactly ``round(rate * n)`` labels are flipped, each to a class drawn uniformly among the
    ``num_classes - 1`` wrong ones.

    Args:
        labels: 1-D integer tensor of class indices.
        num_classes: number of classes ``K`` (at least 2).
        rate: fraction of labels to flip, in ``[0, 1)``.
        generator: source of randomness (the result is a pure function of its state).

    Returns:
        ``(noisy_labels, flipped_mask)``; the input is not modified.

    Raises:
        ValueError: if ``rate`` is outside ``[0, 1)`` or ``num_classes < 2``.
    """
    _check_fraction("rate", rate)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; received num_classes={num_classes!r}")
    n = labels.numel()
    k = int(round(rate * n))
    idx = torch.randperm(n, generator=generator)[:k]
    offset = torch.randint(1, num_classes, (k,), generator=generator)
    noisy = labels.clone()
    noisy[idx] = (labels[idx] + offset) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return noisy, mask


@dataclass(frozen=True)
class Split:
    """Features and targets of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class DigitsData:
    """scikit-learn's 8x8 digits, split into train / val / test, with optional label noise.

    ``train.y`` holds the (possibly noisy) labels the model sees; ``train_clean_y`` the true ones;
    validation labels carry the same noise as training (a practitioner only has noisy labels);
    the test split is always clean.
    """

    train: Split
    val: Split
    test: Split
    train_clean_y: torch.Tensor
    noisy_mask: torch.Tensor
    noise: float
    num_classes: int = 10

    @property
    def num_features(self) -> int:
        return self.train.x.shape[1]


def load_digits(
    *,
    n_train: int = 500,
    n_val: int = 300,
    noise: float = 0.0,
    noisy_val: bool = True,
    seed: int = 0,
) -> DigitsData:
    """Load scikit-learn's digits (1797 images, 64 features scaled to [0, 1]) and split them.

    The split is stratification-free but seeded; the rest after train and validation is test.

    Args:
        n_train: training examples (small subsets make memorization visible).
        n_val: validation examples.
        noise: symmetric label-noise rate applied to the training labels (see :func:`flip_labels`).
        noisy_val: apply the same noise rate to validation labels (default, realistic).
        seed: seed for the split and the noise.

    Raises:
        ValueError: if sizes do not fit the 1797 examples or ``noise`` is outside ``[0, 1)``.
    """
    from sklearn.datasets import load_digits as _sk_digits

    _check_fraction("noise", noise)
    x_np, y_np = _sk_digits(return_X_y=True)
    total = len(y_np)
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1; received n_train={n_train!r}")
    if n_val < 1:
        raise ValueError(f"n_val must be >= 1; received n_val={n_val!r}")
    if n_train + n_val >= total:
        raise ValueError(
            f"n_train + n_val must leave test examples out of {total}; "
            f"received n_train={n_train}, n_val={n_val}"
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=g)
    x = torch.from_numpy((x_np / 16.0).astype(np.float32))[perm]
    y = torch.from_numpy(y_np.astype(np.int64))[perm]
    tr, va = slice(0, n_train), slice(n_train, n_train + n_val)
    te = slice(n_train + n_val, total)
    y_train, mask = flip_labels(y[tr], 10, noise, generator=g)
    y_val = flip_labels(y[va], 10, noise, generator=g)[0] if noisy_val else y[va]
    return DigitsData(
        train=Split(x[tr], y_train),
        val=Split(x[va], y_val),
        test=Split(x[te], y[te]),
        train_clean_y=y[tr],
        noisy_mask=mask,
        noise=noise,
    )


class TensorLoader:
    """Mini-batches over in-memory tensors, with a resumable shuffling generator.

    A lighter, deterministic replacement for ``DataLoader(TensorDataset(...))`` on small data:
    each pass draws one permutation from its own ``torch.Generator``, so
    ``state_dict()`` / ``load_state_dict()`` reproduce the exact batch order after a resume.

    Args:
        *tensors: tensors sharing their first dimension.
        batch_size: examples per batch (>= 1).
        shuffle: draw a new permutation every pass.
        seed: seed of the shuffling generator.
        drop_last: drop the last incomplete batch.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if not tensors:
            raise ValueError("tensors must not be empty; received no tensors")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            shapes = [tuple(t.shape) for t in tensors]
            raise ValueError(f"tensors must share their first dimension; received shapes={shapes}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; received batch_size={batch_size!r}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = self.tensors[0].shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.tensors[0].shape[0]
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            if order is None:
                yield tuple(t[sl] for t in self.tensors)
            else:
                idx = order[sl]
                yield tuple(t[idx] for t in self.tensors)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


@dataclass(frozen=True)
class RegressionData:
    """A synthetic regression problem with its generating coefficients."""

    train: Split
    test: Split
    true_w: torch.Tensor
    true_b: float
    noise_std: float


def make_high_dim_regression(
    *, n_train: int = 20, n_test: int = 100, dim: int = 200, noise_std: float = 0.01, seed: int = 0
) -> RegressionData:
    """The high-dimensional linear regression used to show weight decay (Dive into Deep Learning 3.7).

    ``y = 0.05 + Σ_i 0.01·x_i + ε`` with ``x ~ N(0, I_d)`` and ``ε ~ N(0, noise_std²)``; with
    ``n_train < dim`` an unregularized model can fit the training set exactly and overfits.
    Targets have shape ``(n, 1)``.

    Raises:
        ValueError: for non-positive sizes or a negative ``noise_std``.
    """
    for name, value in (("n_train", n_train), ("n_test", n_test), ("dim", dim)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; received {name}={value!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0; received noise_std={noise_std!r}")
    g = torch.Generator().manual_seed(seed)
    true_w = torch.full((dim, 1), 0.01)
    true_b = 0.05
    x = torch.randn(n_train + n_test, dim, generator=g)
    y = x @ true_w + true_b + noise_std * torch.randn(n_train + n_test, 1, generator=g)
    return RegressionData(
        train=Split(x[:n_train], y[:n_train]),
        test=Split(x[n_train:], y[n_train:]),
        true_w=true_w,
        true_b=true_b,
        noise_std=noise_std,
    )


def make_polynomial(
    *,
    max_degree: int = 20,
    coefficients: tuple[float, ...] = (5.0, 1.2, -3.4, 5.6),
    n_train: int = 100,
    n_test: int = 100,
    noise_std: float = 0.1,
    seed: int = 0,
) -> RegressionData:
    """Polynomial features ``x^i / i!`` (i = 0..max_degree) of ``x ~ N(0, 1)`` (D2L 3.6).

    ``y = Σ_i c_i·x^i/i! + ε``; coefficients beyond ``len(coefficients)`` are zero. The features of
    both splits have ``max_degree + 1`` columns: slice ``[:, :k]`` to fit a model of degree ``k-1``.
    Targets have shape ``(n, 1)``; ``true_w`` holds all ``max_degree + 1`` coefficients.

    Raises:
        ValueError: for sizes < 1, ``max_degree + 1 < len(coefficients)`` or negative ``noise_std``.
    """
    if not isinstance(max_degree, int) or max_degree + 1 < len(coefficients):
        raise ValueError(
            f"max_degree must be an int >= len(coefficients) - 1; received max_degree={max_degree!r}"
        )
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; received {name}={value!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0; received noise_std={noise_std!r}")
    g = torch.Generator().manual_seed(seed)
    true_w = torch.zeros(max_degree + 1, 1, dtype=torch.float64)
    true_w[: len(coefficients), 0] = torch.tensor(coefficients, dtype=torch.float64)
    x = torch.randn(n_train + n_test, 1, generator=g, dtype=torch.float64)
    powers = torch.arange(max_degree + 1, dtype=torch.float64)
    features = x.pow(powers) / torch.exp(torch.lgamma(powers + 1))
    y = features @ true_w + noise_std * torch.randn(n_train + n_test, 1, generator=g, dtype=torch.float64)
    features, y = features.float(), y.float()
    return RegressionData(
        train=Split(features[:n_train], y[:n_train]),
        test=Split(features[n_train:], y[n_train:]),
        true_w=true_w.float(),
        true_b=0.0,
        noise_std=noise_std,
    )
