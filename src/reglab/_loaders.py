"""Shared base of the loader wrappers that own a random generator (augmentation, soft targets)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch


class SeededWrapper:
    """Wraps an iterable of batches and owns ``self.generator``; resumes both exactly.

    Subclasses set ``self.data`` and ``self.generator`` and define ``__iter__``.
    :meth:`state_dict` / :meth:`load_state_dict` cover the generator and, when it has them, the
    wrapped loader (e.g. :class:`reglab.TensorLoader`'s shuffling state).
    """

    data: Iterable[Sequence[torch.Tensor]]
    generator: torch.Generator

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"generator": self.generator.get_state()}
        if hasattr(self.data, "state_dict"):
            state["data"] = self.data.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if "data" in state and hasattr(self.data, "load_state_dict"):
            self.data.load_state_dict(state["data"])
