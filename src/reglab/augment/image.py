"""Batched, generator-driven image augmentation on plain tensors, and a policy for small images.

Each transform takes a batch ``(N, C, H, W)`` (or ``(N, H, W)``) and draws one set of random
parameters **per sample** with a ``torch.Generator``, without Python loops over the batch, so the
same generator state gives the same batch. :func:`default_policy` chains them for small
images such as scikit-learn's 8x8 digits scaled to ``[0, 1]`` (also as flat ``(N, 64)`` rows).

The peers are torchvision's ``transforms.v2`` (``RandomCrop(padding=...)``, ``RandomAffine``,
``RandomErasing``); torchvision cannot be imported with this project's torch build (its compiled
operators do not match), and its v2 transforms draw one set of parameters per call from the
global RNG, so these are written with ``torch.nn.functional.affine_grid`` / ``grid_sample`` and
index arithmetic instead. Semantics follow torchvision where they overlap.

References: Simard, Steinkraus & Platt, 2003, "Best practices for convolutional neural networks
applied to visual document analysis" (small affine distortions of digits); Zhong et al., 2020,
"Random erasing data augmentation" (AAAI); DeVries & Taylor, 2017, "Improved regularization of
convolutional neural networks with cutout".
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Compose",
    "RandomAffine",
    "RandomErasing",
    "RandomShift",
    "default_policy",
]

Transform = Callable[..., torch.Tensor]


def _as_4d(x: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x.unsqueeze(1), True
    raise ValueError(f"{name} needs images (N, C, H, W) or (N, H, W); received shape {tuple(x.shape)}")


def _range(name: str, value: Any, *, symmetric: bool, low: float, high: float) -> tuple[float, float]:
    """A number ``v`` means ``(-v, v)`` when symmetric, else a ``(lo, hi)`` pair; checked against bounds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and symmetric:
        pair = (-float(value), float(value))
        ok = value >= 0
    elif isinstance(value, Sequence) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        pair = (float(value[0]), float(value[1]))
        ok = pair[0] <= pair[1]
    else:
        pair, ok = (0.0, 0.0), False
    if not ok or not (low <= pair[0] and pair[1] <= high):
        form = "a number >= 0 or a (lo, hi) pair" if symmetric else "a (lo, hi) pair with lo <= hi"
        raise ValueError(f"{name} must be {form} within [{low}, {high}]; received {name}={value!r}")
    return pair


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (hi - lo) + lo


class RandomShift:
    """Random translation by whole pixels: pad by ``max_shift`` with ``fill``, crop back at a random offset.

    torchvision's ``RandomCrop(size, padding=max_shift, fill=fill)``, with one offset per sample:
    each image moves by ``(dy, dx)`` with ``dy, dx`` uniform in ``{-max_shift, …, max_shift}``.

    Args:
        max_shift: largest shift in pixels, an int >= 0.
        fill: value of the pixels that enter the image.

    Raises:
        ValueError: if ``max_shift`` is not an int >= 0.

    Example:
        >>> out = RandomShift(1)(torch.rand(5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([5, 1, 8, 8])
    """

    def __init__(self, max_shift: int = 1, *, fill: float = 0.0) -> None:
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be an int >= 0; received max_shift={max_shift!r}")
        self.max_shift = max_shift
        self.fill = float(fill)

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x4, squeeze = _as_4d(x, "RandomShift")
        s = self.max_shift
        if s == 0:
            return x
        n, _, h, w = x4.shape
        padded = F.pad(x4, (s, s, s, s), value=self.fill)
        offsets = torch.randint(0, 2 * s + 1, (2, n), generator=generator)
        rows = (offsets[0, :, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
        cols = (offsets[1, :, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, C, H, W)
        out = out.contiguous()
        return out.squeeze(1) if squeeze else out

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, fill={self.fill:g})"


class RandomAffine:
    """Random rotation and scaling about the image centre, bilinear, one draw per sample.

    Angles are uniform in ``degrees`` (a number ``d`` means ``(-d, d)``); positive angles rotate
    counter-clockwise as the image is displayed (row 0 at the top). Scale factors are uniform in
    ``scale``. Rotation is done in pixel units, so non-square images are not sheared. Pixels that
    come from outside the image get ``fill``. Like torchvision's ``RandomAffine`` with
    ``interpolation=BILINEAR`` but sampled per sample.

    Args:
        degrees: ``d >= 0`` or ``(lo, hi)`` within ``[-180, 180]``.
        scale: ``(lo, hi)`` with ``0 < lo <= hi``.
        fill: value outside the source image.

    Raises:
        ValueError: for a bad ``degrees`` or ``scale``.

    Example:
        >>> img = torch.arange(16.0).view(1, 1, 4, 4)
        >>> out = RandomAffine(degrees=(90, 90))(img)
        >>> bool(torch.allclose(out, torch.rot90(img, 1, (2, 3)), atol=1e-5))
        True
    """

    def __init__(
        self, degrees: float | tuple[float, float] = 10.0, *, scale: tuple[float, float] = (1.0, 1.0), fill: float = 0.0
    ) -> None:
        self.degrees = _range("degrees", degrees, symmetric=True, low=-180.0, high=180.0)
        self.scale = _range("scale", scale, symmetric=False, low=1e-6, high=float("inf"))
        self.fill = float(fill)

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x4, squeeze = _as_4d(x, "RandomAffine")
        n, _, h, w = x4.shape
        angle = _uniform(n, *self.degrees, generator) * (math.pi / 180.0)
        scale = _uniform(n, *self.scale, generator)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # output -> input map in pixel units (x right, y down): rotate by -angle on screen, shrink by 1/scale
        a = torch.stack([cos, -sin * h / w, sin * w / h, cos], dim=1).view(n, 2, 2)
        a = a / scale.view(n, 1, 1)
        theta = torch.cat([a, torch.zeros(n, 2, 1)], dim=2).to(x4.dtype)
        grid = F.affine_grid(theta, [n, x4.shape[1], h, w], align_corners=False)
        src = x4 - self.fill if self.fill else x4
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.fill:
            out = out + self.fill
        return out.squeeze(1) if squeeze else out

    def __repr__(self) -> str:
        return f"RandomAffine(degrees={self.degrees}, scale={self.scale}, fill={self.fill:g})"


class RandomErasing:
    """Random erasing (Zhong et al., 2020): with probability ``p`` per sample, fill one rectangle with ``value``.

    The rectangle's area is a fraction uniform in ``scale`` of the image, its aspect ratio
    ``h/w`` log-uniform in ``ratio``; its sides are rounded and clipped to the image (torchvision
    instead retries up to ten times and skips the sample when nothing fits) and its position is
    uniform among the places where it fits. All channels are erased.

    Args:
        p: probability of erasing a sample, in ``[0, 1]``.
        scale: ``(lo, hi)`` area fractions within ``[0, 1]``.
        ratio: ``(lo, hi)`` aspect ratios, ``0 < lo <= hi``.
        value: the fill value.

    Raises:
        ValueError: for a bad ``p``, ``scale`` or ``ratio``.

    Example:
        >>> out = RandomErasing(p=1.0)(torch.ones(3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        >>> bool((out == 0).flatten(1).any(1).all())
        True
    """

    def __init__(
        self,
        p: float = 0.5,
        *,
        scale: tuple[float, float] = (0.02, 0.33),
        ratio: tuple[float, float] = (0.3, 3.3),
        value: float = 0.0,
    ) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a number in [0, 1]; received p={p!r}")
        self.p = float(p)
        self.scale = _range("scale", scale, symmetric=False, low=0.0, high=1.0)
        self.ratio = _range("ratio", ratio, symmetric=False, low=1e-6, high=float("inf"))
        self.value = float(value)

    def boxes(self, n: int, h: int, w: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``(N, 5)`` integer rows ``(apply, top, left, height, width)``."""
        u = torch.rand(5, n, generator=generator)
        apply = u[0] < self.p
        area = (u[1] * (self.scale[1] - self.scale[0]) + self.scale[0]) * (h * w)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(u[2] * (log_hi - log_lo) + log_lo)
        eh = torch.sqrt(area * ratio).round().clamp(1, h).long()
        ew = torch.sqrt(area / ratio).round().clamp(1, w).long()
        top = (u[3] * (h - eh + 1)).floor().long().clamp(max=h - 1)
        left = (u[4] * (w - ew + 1)).floor().long().clamp(max=w - 1)
        return torch.stack([apply.long(), top, left, eh, ew], dim=1)

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x4, squeeze = _as_4d(x, "RandomErasing")
        n, _, h, w = x4.shape
        b = self.boxes(n, h, w, generator)
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        top, left, eh, ew = (b[:, i].view(n, 1, 1) for i in range(1, 5))
        mask = (rows >= top) & (rows < top + eh) & (cols >= left) & (cols < left + ew)
        mask &= b[:, 0].bool().view(n, 1, 1)
        out = x4.masked_fill(mask[:, None], self.value)
        return out.squeeze(1) if squeeze else out

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p:g}, scale={self.scale}, ratio={self.ratio}, value={self.value:g})"


class Compose:
    """Apply transforms in order with one generator; flat ``(N, H·W)`` rows are reshaped when ``image_size`` is set.

    Args:
        transforms: callables ``t(x, generator=...) -> x`` on ``(N, C, H, W)`` batches.
        image_size: ``(H, W)`` to accept flattened images ``(N, C·H·W)`` (returned flat again).
        seed: when given, the policy owns a generator used whenever none is passed (saved by
            :meth:`state_dict`); otherwise the global generator is used.

    Raises:
        ValueError: for a bad ``image_size`` or a non-callable transform.
    """

    def __init__(
        self, transforms: Iterable[Transform], *, image_size: tuple[int, int] | None = None, seed: int | None = None
    ) -> None:
        self.transforms = list(transforms)
        if not all(callable(t) for t in self.transforms):
            raise ValueError(f"transforms must be callables; received transforms={self.transforms!r}")
        if image_size is not None and (
            len(image_size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_size)
        ):
            raise ValueError(f"image_size must be None or (H, W) of ints >= 1; received image_size={image_size!r}")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        generator = generator if generator is not None else self.generator
        shape = x.shape
        if x.ndim == 2:
            if self.image_size is None:
                raise ValueError("flattened (N, D) inputs need image_size=(H, W); received image_size=None")
            h, w = self.image_size
            if shape[1] % (h * w):
                raise ValueError(f"inputs of width {shape[1]} are not images of image_size={self.image_size}")
            x = x.reshape(shape[0], -1, h, w)
        for t in self.transforms:
            x = t(x, generator=generator)
        return x.reshape(shape)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("generator") is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}], image_size={self.image_size})"


def default_policy(
    image_size: tuple[int, int] | None = None,
    *,
    max_shift: int = 1,
    degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    erase_p: float = 0.25,
    erase_scale: tuple[float, float] = (0.02, 0.12),
    fill: float = 0.0,
    seed: int | None = None,
) -> Compose:
    """The default augmentation for small images (e.g. 8x8 digits in ``[0, 1]``).

    Shift by up to ``max_shift`` pixels (padding with ``fill``), rotate by up to ``degrees`` and
    scale within ``scale`` (Simard et al., 2003, use small affine distortions for digits), then
    erase a small rectangle with probability ``erase_p`` (Zhong et al., 2020). Each magnitude can
    be set to zero to turn that step off without changing the policy's structure.

    Args:
        image_size: ``(H, W)`` to accept flat rows such as digits' ``(N, 64)``; ``None`` for
            ``(N, C, H, W)`` or ``(N, H, W)`` batches.
        max_shift: pixels, int >= 0.
        degrees: largest rotation in degrees, in ``[0, 180]``.
        scale: ``(lo, hi)`` zoom factors.
        erase_p: probability of erasing per sample, in ``[0, 1]``.
        erase_scale: ``(lo, hi)`` area fractions of the erased rectangle.
        fill: background value (0 for digits).
        seed: give the policy its own generator (see :class:`Compose`).

    Returns:
        A :class:`Compose`; call it as ``policy(x, generator=g)``.

    Raises:
        ValueError: for any bad magnitude (from the transforms' constructors).

    Example:
        >>> policy = default_policy((8, 8))
        >>> x = torch.rand(16, 64)
        >>> policy(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([16, 64])
    """
    if isinstance(erase_p, bool) or not isinstance(erase_p, (int, float)) or not 0.0 <= erase_p <= 1.0:
        raise ValueError(f"erase_p must be a number in [0, 1]; received erase_p={erase_p!r}")
    _range("erase_scale", erase_scale, symmetric=False, low=0.0, high=1.0)
    return Compose(
        [
            RandomShift(max_shift, fill=fill),
            RandomAffine(degrees, scale=scale, fill=fill),
            RandomErasing(erase_p, scale=erase_scale, value=fill),
        ],
        image_size=image_size,
        seed=seed,
    )
