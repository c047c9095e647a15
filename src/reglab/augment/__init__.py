"""Data augmentation: token and word level text operations, and batched image transforms.

* :mod:`reglab.augment.text`: ``random_mask``, ``random_delete``, ``random_swap`` (on token-id
  tensors, vectorised, never touching special or padding tokens; ``random_delete`` and
  ``random_swap`` also on sentences), ``synonym_replace`` with a pluggable lexicon, and
  ``back_translate`` with a :class:`~reglab.augment.text.Translator` protocol and a Hugging Face
  MarianMT implementation.
* :mod:`reglab.augment.image`: per-sample random shift, affine and erasing on plain tensors,
  and :func:`~reglab.augment.image.default_policy` for small images such as the 8x8 digits.
* :class:`Augmented` applies a batch transform to the inputs of any loader, reproducibly.

Every random operation takes a ``torch.Generator`` (or a seed) and every rate is validated when
the object is built or the function called.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import torch

from reglab._loaders import SeededWrapper
from reglab.augment import image, text
from reglab.augment.image import default_policy

__all__ = ["Augmented", "default_policy", "image", "text"]


class Augmented(SeededWrapper):
    """Wrap a loader of ``(x, y, ...)`` batches and yield ``(transform(x, generator=g), y, ...)``.

    Training-time augmentation for :func:`reglab.fit` (evaluate on the plain loader). The
    generator is owned here, so :meth:`state_dict` / :meth:`load_state_dict` (which also cover
    the wrapped loader when it has them) reproduce the same augmented batches after a resume.

    Args:
        data: an iterable of batches, iterated again each pass.
        transform: ``transform(x, generator=...) -> x``, e.g. :func:`default_policy`.
        seed: seed of the generator.

    Raises:
        ValueError: if ``transform`` is not callable.

    Example:
        >>> from reglab.data import TensorLoader
        >>> loader = TensorLoader(torch.rand(8, 64), torch.arange(8), batch_size=4)
        >>> train = Augmented(loader, default_policy((8, 8)), seed=0)
        >>> [tuple(x.shape) for x, _ in train]
        [(4, 64), (4, 64)]
    """

    def __init__(self, data: Iterable[Sequence[torch.Tensor]], transform: Callable[..., torch.Tensor], *, seed: int = 0):
        if not callable(transform):
            raise ValueError(f"transform must be callable; received transform={transform!r}")
        self.data = data
        self.transform = transform
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in self.data:
            yield (self.transform(batch[0], generator=self.generator), *batch[1:])

