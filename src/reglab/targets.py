"""Soft targets: label smoothing, soft-target cross-entropy, Mixup and CutMix.

* :func:`smooth_labels` turns class indices (or probabilities) into ``(1-ε)·onehot + ε/K``
  (Szegedy et al., 2016, "Rethinking the Inception architecture", section 7). With
  :func:`soft_target_cross_entropy` it gives exactly ``nn.CrossEntropyLoss(label_smoothing=ε)``.
* :class:`Mixup` (Zhang et al., 2018, "mixup: Beyond empirical risk minimization") and
  :class:`CutMix` (Yun et al., 2019, "CutMix: Regularization strategy to train strong
  classifiers with localizable features") mix a batch with itself and return soft targets.
* :class:`SoftTargets` wraps a loader of ``(x, class_index)`` batches and yields
  ``(x, soft_targets)`` usable with :func:`reglab.fit` and :class:`SoftTargetCrossEntropy`.

**One place owns smoothing.** Smoothing is linear, so smoothing then mixing equals mixing then
smoothing; doing it twice is not the same as doing it once (``ε`` becomes ``2ε - ε²``).
:class:`SoftTargets` smooths once, after mixing; :class:`Mixup` and :class:`CutMix` never smooth.
Tensors made by :func:`smooth_labels` / :class:`SoftTargets` are remembered (weakly), and a loss
with its own ``label_smoothing > 0`` warns with :class:`DoubleSmoothingWarning` when it receives
one; :meth:`SoftTargets.check_loss` also warns for a ``torch.nn.CrossEntropyLoss`` with
``label_smoothing > 0``.

torchvision's ``transforms.v2.MixUp`` / ``CutMix`` are the peers (same pairing with the batch
rolled by one, same ``λ ~ Beta(α, α)`` and CutMix box rule), but torchvision cannot be imported
with this project's torch build, and its transforms draw from the global RNG; these take a
``torch.Generator`` and work on plain tensors.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reglab._loaders import SeededWrapper

__all__ = [
    "CutMix",
    "DoubleSmoothingWarning",
    "Mixup",
    "SoftTargetCrossEntropy",
    "SoftTargets",
    "smooth_labels",
    "soft_target_cross_entropy",
]


class DoubleSmoothingWarning(UserWarning):
    """Label smoothing was applied twice (in the targets and again in the loss)."""


class _SmoothedRegistry:
    """Weak identity set of target tensors that are already smoothed."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}

    def add(self, tensor: torch.Tensor) -> None:
        key = id(tensor)
        self._refs[key] = weakref.ref(tensor, lambda _r, _k=key: self._refs.pop(_k, None))

    def __contains__(self, tensor: object) -> bool:
        ref = self._refs.get(id(tensor))
        return ref is not None and ref() is tensor


_SMOOTHED = _SmoothedRegistry()


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be a number in [0, 1]; received eps={eps!r}")
    return float(eps)


def _check_smoothing(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"label_smoothing must be a number in [0, 1]; received label_smoothing={value!r}")
    return float(value)


def _check_reduction(value: Any) -> str:
    if value not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; received reduction={value!r}")
    return value


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; received num_classes={num_classes!r}")
    return num_classes


def _one_hot(targets: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices -> one-hot floats; float targets of width K are returned as they are."""
    if torch.is_floating_point(targets):
        if targets.shape[-1] != num_classes:
            raise ValueError(
                f"probability targets must have num_classes={num_classes} columns; received shape {tuple(targets.shape)}"
            )
        return targets
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"class indices must lie in [0, {num_classes}); received values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    return F.one_hot(targets.long(), num_classes).to(dtype)


def smooth_labels(
    targets: torch.Tensor, num_classes: int, eps: float, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Label smoothing: ``(1 - eps)·onehot(targets) + eps/K``.

    Used with :func:`soft_target_cross_entropy` it equals
    ``torch.nn.CrossEntropyLoss(label_smoothing=eps)`` on class indices (torch's definition:
    ``(1-ε)·NLL + ε·mean_k(-log p_k)``). Probability targets (float, last dimension ``K``, e.g.
    Mixup output) are smoothed the same way: ``(1 - eps)·t + eps/K``.

    Args:
        targets: integer class indices of any shape, or float probabilities ``(..., K)``.
        num_classes: ``K >= 2``.
        eps: smoothing in ``[0, 1]`` (``eps = 1`` gives the uniform distribution).
        dtype: floating dtype of the result for index targets.

    Returns:
        Probabilities of shape ``targets.shape + (K,)`` (index targets) or ``targets.shape``.

    Raises:
        ValueError: for ``K < 2``, ``eps`` outside ``[0, 1]``, indices outside ``[0, K)`` or
            probability targets whose last dimension is not ``K``.

    Example:
        >>> smooth_labels(torch.tensor([0, 2]), 3, 0.3)
        tensor([[0.8000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.8000]])
    """
    num_classes = _check_num_classes(num_classes)
    eps = _check_eps(eps)
    probs = _one_hot(targets, num_classes, dtype)
    out = probs * (1.0 - eps) + eps / num_classes
    if eps > 0:
        _SMOOTHED.add(out)
    return out


def soft_target_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy with class-index or probability targets, through ``torch.nn.functional.cross_entropy``.

    ``-Σ_k t_k · log softmax(logits)_k``, averaged over the batch (``reduction="mean"``), summed
    or per sample (``"none"``). ``label_smoothing`` is torch's: it smooths the targets here, in the
    loss; a :class:`DoubleSmoothingWarning` is raised when the targets were already smoothed by
    :func:`smooth_labels` / :class:`SoftTargets`.

    Args:
        logits: ``(N, K)`` (or ``(N, K, d...)`` as torch accepts) unnormalized scores.
        targets: ``(N,)`` class indices or ``(N, K)`` probabilities.
        label_smoothing: ``ε`` in ``[0, 1]``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss tensor.

    Raises:
        ValueError: for a bad ``label_smoothing`` or ``reduction``.

    Example:
        >>> logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
        >>> ref = F.cross_entropy(logits, y, label_smoothing=0.1)
        >>> bool(torch.allclose(soft_target_cross_entropy(logits, smooth_labels(y, 3, 0.1)), ref))
        True
    """
    label_smoothing = _check_smoothing(label_smoothing)
    _check_reduction(reduction)
    if label_smoothing > 0 and targets in _SMOOTHED:
        warnings.warn(
            f"targets are already smoothed and the loss smooths again (label_smoothing={label_smoothing}); "
            "smooth in one place only (set the loss's label_smoothing to 0)",
            DoubleSmoothingWarning,
            stacklevel=2,
        )
    if torch.is_floating_point(targets):
        targets = targets.to(logits.dtype)
    return F.cross_entropy(logits, targets, label_smoothing=float(label_smoothing), reduction=reduction)


class SoftTargetCrossEntropy(nn.Module):
    """Module form of :func:`soft_target_cross_entropy`, a ``loss_fn`` for :func:`reglab.fit`.

    Accepts class indices (evaluation sets) and probabilities (training batches of
    :class:`SoftTargets`) alike.

    Args:
        label_smoothing: ``ε`` in ``[0, 1]``; keep 0 when the targets are smoothed elsewhere.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: for a bad ``label_smoothing`` or ``reduction``.

    Example:
        >>> loss = SoftTargetCrossEntropy()
        >>> round(float(loss(torch.zeros(1, 4), torch.tensor([[0.25, 0.25, 0.25, 0.25]]))), 4) == round(math.log(4), 4)
        True
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.reduction = _check_reduction(reduction)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_target_cross_entropy(
            logits, targets, label_smoothing=self.label_smoothing, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing:g}, reduction={self.reduction!r}"


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < float("inf"):
        raise ValueError(f"alpha must be a finite number > 0; received alpha={alpha!r}")
    return float(alpha)


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(α, α), reproducible from a torch generator (numpy does the sampling)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


class Mixup:
    """Mixup of a batch with itself rolled by one: ``x̃ = λ·x + (1-λ)·x_roll``, ``ỹ = λ·y + (1-λ)·y_roll``.

    One ``λ ~ Beta(α, α)`` per batch, as torchvision ``transforms.v2.MixUp`` (pairing each sample
    with the previous one in the batch). Targets are class indices (made one-hot) or
    probabilities; the result is never smoothed (see :class:`SoftTargets`).

    Args:
        num_classes: ``K >= 2``.
        alpha: Beta concentration ``α > 0`` (Zhang et al. use 0.2 to 0.4 on ImageNet; torchvision's
            default is 1.0).

    Raises:
        ValueError: for bad ``num_classes`` or ``alpha``.

    Example:
        >>> mix = Mixup(num_classes=3, alpha=0.4)
        >>> x, y = mix(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), generator=torch.Generator().manual_seed(0))
        >>> y.shape, bool(torch.allclose(y.sum(1), torch.ones(4)))
        (torch.Size([4, 3]), True)
    """

    def __init__(self, num_classes: int, alpha: float = 1.0) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.alpha = _check_alpha(alpha)
        self.last_lam: float | None = None

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mixed inputs and the mixed soft targets (``λ`` is kept in ``last_lam``)."""
        y = _one_hot(targets, self.num_classes, x.dtype if x.is_floating_point() else torch.float32)
        lam = _beta(self.alpha, generator)
        self.last_lam = lam
        x_mixed = x.roll(1, 0).mul(1.0 - lam).add_(x, alpha=lam)
        y_mixed = y.roll(1, 0).mul(1.0 - lam).add_(y, alpha=lam)
        return x_mixed, y_mixed

    def __repr__(self) -> str:
        return f"Mixup(num_classes={self.num_classes}, alpha={self.alpha:g})"


class CutMix:
    """CutMix: paste a random box of the previous sample of the batch, mix targets by area.

    As torchvision ``transforms.v2.CutMix``: ``λ ~ Beta(α, α)``, a box of side ``H·√(1-λ)`` by
    ``W·√(1-λ)`` centred uniformly at random and clipped to the image, one box per batch, and
    ``λ`` then corrected to ``1 - box_area / (H·W)`` so the targets match the pixels.

    Args:
        num_classes: ``K >= 2``.
        alpha: Beta concentration ``α > 0`` (Yun et al. use 1.0).
        image_size: ``(H, W)`` when the batch holds flattened images ``(N, H·W)`` or
            ``(N, C·H·W)``; images ``(N, C, H, W)`` or ``(N, H, W)`` need nothing.

    Raises:
        ValueError: for bad ``num_classes``, ``alpha`` or ``image_size``.

    Example:
        >>> cut = CutMix(num_classes=10, image_size=(8, 8))
        >>> x, y = cut(torch.rand(4, 64), torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(0))
        >>> x.shape, y.shape
        (torch.Size([4, 64]), torch.Size([4, 10]))
    """

    def __init__(self, num_classes: int, alpha: float = 1.0, *, image_size: tuple[int, int] | None = None) -> None:
        self.num_classes = _check_num_classes(num_classes)
        self.alpha = _check_alpha(alpha)
        if image_size is not None and (
            len(image_size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_size)
        ):
            raise ValueError(f"image_size must be None or (H, W) of ints >= 1; received image_size={image_size!r}")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.last_lam: float | None = None
        self.last_box: tuple[int, int, int, int] | None = None

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the pasted inputs and soft targets; the box ``(top, left, bottom, right)`` is in ``last_box``."""
        y = _one_hot(targets, self.num_classes, x.dtype if x.is_floating_point() else torch.float32)
        shape = x.shape
        if x.ndim == 2:
            if self.image_size is None:
                raise ValueError("CutMix needs image_size=(H, W) for flattened (N, D) inputs; received image_size=None")
            h, w = self.image_size
            if shape[1] % (h * w):
                raise ValueError(f"inputs of width {shape[1]} are not images of image_size={self.image_size}")
            x = x.reshape(shape[0], -1, h, w)
        elif x.ndim < 3:
            raise ValueError(f"CutMix needs images (N, [C,] H, W); received shape {tuple(shape)}")
        h, w = x.shape[-2], x.shape[-1]
        lam = _beta(self.alpha, generator)
        r = torch.rand(2, generator=generator)
        cy, cx = int(r[0] * h), int(r[1] * w)
        rh, rw = int(h * math.sqrt(1.0 - lam) / 2), int(w * math.sqrt(1.0 - lam) / 2)
        top, bottom = max(cy - rh, 0), min(cy + rh, h)
        left, right = max(cx - rw, 0), min(cx + rw, w)
        out = x.clone()
        out[..., top:bottom, left:right] = x.roll(1, 0)[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)
        self.last_lam, self.last_box = lam, (top, left, bottom, right)
        y_mixed = y.roll(1, 0).mul(1.0 - lam).add_(y, alpha=lam)
        return out.reshape(shape), y_mixed

    def __repr__(self) -> str:
        return f"CutMix(num_classes={self.num_classes}, alpha={self.alpha:g}, image_size={self.image_size})"


class SoftTargets(SeededWrapper):
    """Wrap a loader of ``(x, class_index)`` batches; yield ``(x, soft_targets)``, mixed then smoothed.

    This is the one place that smooths: each batch's targets become one-hot, are optionally mixed
    (:class:`Mixup` / :class:`CutMix`, one chosen at random per batch when several are given,
    applied with probability ``mix_prob``), then smoothed once with :func:`smooth_labels`. Use it
    with ``loss_fn=SoftTargetCrossEntropy()`` (no smoothing in the loss) and evaluate with class
    indices (the same loss accepts both). The generator state is saved by :meth:`state_dict`.

    Args:
        data: an iterable of ``(x, y, ...)`` batches, iterated again each pass (e.g.
            :class:`reglab.TensorLoader`).
        num_classes: ``K >= 2``.
        label_smoothing: ``ε`` in ``[0, 1]``.
        mix: ``None``, a :class:`Mixup` / :class:`CutMix` (any callable
            ``(x, y, generator=) -> (x, y_soft)``), or a sequence of them.
        mix_prob: probability of mixing a batch, in ``[0, 1]``.
        seed: seed of the generator driving the mixing.
        loss_fn: optional loss checked now with :meth:`check_loss`.

    Raises:
        ValueError: for bad ``num_classes``, ``label_smoothing``, ``mix`` or ``mix_prob``.

    Example:
        >>> from reglab.data import TensorLoader
        >>> loader = TensorLoader(torch.randn(8, 4), torch.arange(8) % 3, batch_size=4)
        >>> data = SoftTargets(loader, num_classes=3, label_smoothing=0.1, mix=Mixup(3, alpha=0.2))
        >>> [tuple(y.shape) for _, y in data]
        [(4, 3), (4, 3)]
    """

    def __init__(
        self,
        data: Iterable[Sequence[torch.Tensor]],
        num_classes: int,
        *,
        label_smoothing: float = 0.0,
        mix: Callable[..., tuple[torch.Tensor, torch.Tensor]] | Sequence[Callable[..., Any]] | None = None,
        mix_prob: float = 1.0,
        seed: int = 0,
        loss_fn: Any = None,
    ) -> None:
        self.data = data
        self.num_classes = _check_num_classes(num_classes)
        self.label_smoothing = _check_smoothing(label_smoothing)
        if mix is None:
            mixers: list[Callable[..., Any]] = []
        elif callable(mix):
            mixers = [mix]
        else:
            mixers = list(mix)
            if not mixers or not all(callable(m) for m in mixers):
                raise ValueError(f"mix must be None, a callable or a non-empty sequence of callables; received mix={mix!r}")
        self.mixers = mixers
        if isinstance(mix_prob, bool) or not isinstance(mix_prob, (int, float)) or not 0.0 <= mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be a number in [0, 1]; received mix_prob={mix_prob!r}")
        self.mix_prob = float(mix_prob)
        self.generator = torch.Generator().manual_seed(seed)
        if loss_fn is not None:
            self.check_loss(loss_fn)

    def check_loss(self, loss_fn: Any) -> bool:
        """Warn (:class:`DoubleSmoothingWarning`) and return False if ``loss_fn`` smooths as well."""
        eps = getattr(loss_fn, "label_smoothing", 0.0) or 0.0
        if self.label_smoothing > 0 and eps > 0:
            warnings.warn(
                f"SoftTargets smooths the targets (label_smoothing={self.label_smoothing}) and the loss "
                f"{type(loss_fn).__name__} smooths again (label_smoothing={eps}); set one of them to 0",
                DoubleSmoothingWarning,
                stacklevel=2,
            )
            return False
        return True

    def transform(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix (maybe) and smooth one batch with this object's generator."""
        dtype = x.dtype if x.is_floating_point() else torch.float32
        soft = _one_hot(y, self.num_classes, dtype)
        if self.mixers:
            draw = torch.rand(2, generator=self.generator)
            if float(draw[0]) < self.mix_prob:
                mixer = self.mixers[min(int(float(draw[1]) * len(self.mixers)), len(self.mixers) - 1)]
                x, soft = mixer(x, soft, generator=self.generator)
        if self.label_smoothing > 0:
            soft = smooth_labels(soft, self.num_classes, self.label_smoothing)
        return x, soft

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in self.data:
            x, soft = self.transform(batch[0], batch[1])
            yield (x, soft, *batch[2:])

