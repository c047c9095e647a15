"""Early stopping (a pure decision object with a best-weights store) and weight EMA.

Early stopping treats the number of epochs as a regularization hyperparameter chosen on held-out
data: Prechelt, "Early Stopping — But When?" (1998), and Goodfellow, Bengio & Courville,
*Deep Learning* §7.8. :class:`EarlyStopping` is a plain object, ``step(value) -> bool``, that any
loop can drive; it is also a callback of :func:`reglab.fit`, and the integrations in
:mod:`reglab.integrations` wrap it for Lightning and the Hugging Face ``Trainer``.

:class:`EMA` keeps an exponential moving average of the weights (Polyak & Juditsky 1992;
the "EMA of weights" used by e.g. Tan & Le, EfficientNet 2019) on top of
``torch.optim.swa_utils.AveragedModel``.
"""

from __future__ import annotations

import contextlib
import enum
import math
from typing import Any, Iterator, Mapping

import torch
from torch import nn

__all__ = ["EarlyStopping", "EMA", "StopReason"]


class StopReason(enum.Enum):
    """Why :class:`EarlyStopping` asked to stop (``.value`` is a human-readable sentence)."""

    PATIENCE = "patience exhausted"
    NON_FINITE = "non-finite value"
    BASELINE = "baseline not reached"


_MODES = ("min", "max")
_SYNC = ("mean", "rank0", "none")


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class EarlyStopping:
    """Stop training when a monitored value stops improving, and keep the best weights.

    Semantics (the code agrees with this text; ``tests/test_stopping.py`` checks it with tables):

    * Epochs are numbered from 1 (the ``t``-th call to :meth:`step` is epoch ``t`` unless an
      explicit ``epoch`` is given). Epochs ``t <= start_from_epoch`` are a warm-up: they are not
      compared, do not count towards patience and never become the best.
    * An **improvement** at epoch ``t`` is a value strictly better than ``best`` by more than
      ``min_delta``: ``value < best - min_delta`` in ``"min"`` mode, ``value > best + min_delta``
      in ``"max"`` mode. ``best`` starts at ``baseline`` when given (so the first improvement must
      beat the baseline), else at ``+inf`` (``-inf`` for ``"max"``).
    * ``patience = p`` stops at the ``p``-th consecutive epoch without improvement: this is the
      formal criterion "stop at ``t`` when the validation loss has not improved for ``p``
      consecutive epochs", i.e. ``t - t_best = p`` (with ``t_best = start_from_epoch`` before any
      improvement). ``p = 1`` stops at the first epoch without improvement.
      ``patience = 0`` is **rejected** (Keras and Lightning silently treat it as 1; here the
      meaning must be explicit). ``patience = None`` never stops on patience: it only tracks and
      restores the best weights (and still stops on a non-finite value).
    * A NaN or infinite value stops at once when ``check_finite`` (also during warm-up); the best
      weights seen so far are kept and :attr:`reason` is :attr:`StopReason.NON_FINITE`.
    * When patience runs out and no value ever beat ``baseline``, :attr:`reason` is
      :attr:`StopReason.BASELINE`, else :attr:`StopReason.PATIENCE`.

    With ``restore_best``, every improvement copies the model's ``state_dict`` into CPU buffers
    allocated once (the accelerator never holds a second copy); :meth:`restore` writes them back.
    As a :func:`reglab.fit` callback, ``on_epoch_end`` reads ``state.history.last[monitor]`` and
    requests a stop, and ``on_fit_end`` restores the best weights whether or not it stopped early.

    Under ``torch.distributed`` (world size > 1), the value is synchronised before the decision so
    that every rank stops at the same epoch: ``sync="mean"`` (default) all-reduces the mean of
    the ranks' values, ``sync="rank0"`` broadcasts rank 0's value, ``sync="none"`` decides per rank.

    Args:
        monitor: history column read by the callback (e.g. ``"val_loss"``).
        mode: ``"min"`` or ``"max"``.
        patience: epochs without improvement before stopping (int >= 1, or ``None``).
        min_delta: improvement margin (>= 0), strict.
        baseline: value the first improvement must beat, or ``None``.
        start_from_epoch: warm-up epochs ignored by the criterion (>= 0).
        restore_best: keep the best weights on CPU and restore them at the end of ``fit``.
        check_finite: stop at once on a NaN or infinite value.
        sync: how ranks agree under ``torch.distributed``: ``"mean"``, ``"rank0"`` or ``"none"``.

    Raises:
        ValueError: for an unknown ``mode``/``sync``, ``patience < 1``, ``min_delta < 0``,
            ``start_from_epoch < 0`` or a non-finite ``baseline``.

    Example:
        >>> stopper = EarlyStopping(patience=2)
        >>> [stopper.step(v) for v in [1.0, 0.5, 0.6, 0.7]]
        [False, False, False, True]
        >>> stopper.best, stopper.best_epoch, stopper.stopped_epoch, stopper.reason.value
        (0.5, 2, 4, 'patience exhausted')
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int | None = 10,
        min_delta: float = 0.0,
        baseline: float | None = None,
        start_from_epoch: int = 0,
        restore_best: bool = True,
        check_finite: bool = True,
        *,
        sync: str = "mean",
    ) -> None:
        errors = []
        if not isinstance(monitor, str) or not monitor:
            errors.append(f"monitor must be a non-empty str; received monitor={monitor!r}")
        if mode not in _MODES:
            errors.append(f"mode must be 'min' or 'max'; received mode={mode!r}")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            errors.append(
                "patience must be an int >= 1 or None (patience=1 stops at the first epoch without "
                f"improvement; 0 is not accepted as an alias of 1); received patience={patience!r}"
            )
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0 or not math.isfinite(min_delta):
            errors.append(f"min_delta must be a finite number >= 0; received min_delta={min_delta!r}")
        if baseline is not None and (not isinstance(baseline, (int, float)) or not math.isfinite(baseline)):
            errors.append(f"baseline must be a finite number or None; received baseline={baseline!r}")
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, int) or start_from_epoch < 0:
            errors.append(f"start_from_epoch must be an int >= 0; received start_from_epoch={start_from_epoch!r}")
        if sync not in _SYNC:
            errors.append(f"sync must be one of {_SYNC}; received sync={sync!r}")
        if errors:
            raise ValueError("; ".join(errors))
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = float(min_delta)
        self.baseline = None if baseline is None else float(baseline)
        self.start_from_epoch = start_from_epoch
        self.restore_best = restore_best
        self.check_finite = check_finite
        self.sync = sync
        self._best_state: dict[str, torch.Tensor] | None = None
        self.reset()

    # ------------------------------------------------------------------ decision logic
    def reset(self) -> None:
        """Forget everything seen (the best weights included)."""
        self.best: float | None = None  # best monitored value seen (None before any improvement)
        self.best_epoch: int | None = None
        self.epoch = 0  # last epoch seen
        self.wait = 0  # consecutive counted epochs without improvement
        self.stopped_epoch: int | None = None
        self.reason: StopReason | None = None
        self._best_state = None

    @property
    def _reference(self) -> float:
        if self.best is not None:
            return self.best
        if self.baseline is not None:
            return self.baseline
        return math.inf if self.mode == "min" else -math.inf

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` improves on the current reference (``best``, else ``baseline``)."""
        ref = self._reference
        if self.mode == "min":
            return value < ref - self.min_delta
        return value > ref + self.min_delta

    def _synchronise(self, value: float) -> float:
        if self.sync == "none" or not _distributed():
            return value
        dist = torch.distributed
        backend = dist.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        t = torch.tensor([value], dtype=torch.float64, device=device)
        if self.sync == "mean":
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= dist.get_world_size()
        else:
            dist.broadcast(t, src=0)
        return float(t.item())

    def step(self, value: float | torch.Tensor, model: nn.Module | None = None, *, epoch: int | None = None) -> bool:
        """Record the value of one epoch; return True when training should stop.

        Args:
            value: the monitored value of this epoch (a number or a one-element tensor).
            model: when given and ``restore_best``, its weights are copied to CPU on improvement.
            epoch: this epoch's number (default: the previous one plus 1).

        Returns:
            True when training should stop now (:attr:`reason` says why). Once stopped, later
            calls keep returning True and change nothing.
        """
        if self.stopped_epoch is not None:
            return True
        value = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
        value = self._synchronise(value)
        self.epoch = self.epoch + 1 if epoch is None else int(epoch)
        if self.check_finite and not math.isfinite(value):
            return self._stop(StopReason.NON_FINITE)
        if self.epoch <= self.start_from_epoch:
            return False
        if self.is_improvement(value):
            self.best, self.best_epoch, self.wait = value, self.epoch, 0
            if self.restore_best and model is not None:
                self._snapshot(model)
            return False
        self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            return self._stop(StopReason.PATIENCE if self.best is not None or self.baseline is None else StopReason.BASELINE)
        return False

    def _stop(self, reason: StopReason) -> bool:
        self.stopped_epoch, self.reason = self.epoch, reason
        return True

    @property
    def message(self) -> str:
        """One sentence saying why training stopped ('' when it has not)."""
        if self.reason is None:
            return ""
        best = "no best yet" if self.best is None else f"best {self.monitor}={self.best:.6g} at epoch {self.best_epoch}"
        if self.reason is StopReason.NON_FINITE:
            detail = f"{self.monitor} is not finite at epoch {self.stopped_epoch} ({best})"
        elif self.reason is StopReason.BASELINE:
            detail = (
                f"{self.monitor} did not beat baseline={self.baseline:g} in {self.patience} epochs "
                f"(stopped at epoch {self.stopped_epoch})"
            )
        else:
            detail = (
                f"{self.monitor} did not improve for {self.patience} epochs "
                f"(stopped at epoch {self.stopped_epoch}; {best})"
            )
        return f"early stopping ({self.reason.value}): {detail}"

    # ------------------------------------------------------------------ best weights
    @torch.no_grad()
    def _snapshot(self, model: nn.Module) -> None:
        state = model.state_dict()
        buffers = self._best_state
        if buffers is None or buffers.keys() != state.keys() or any(
            buffers[k].shape != v.shape or buffers[k].dtype != v.dtype for k, v in state.items()
        ):
            pin = torch.cuda.is_available() and any(v.is_cuda for v in state.values())
            buffers = {k: torch.empty(v.shape, dtype=v.dtype, device="cpu", pin_memory=pin) for k, v in state.items()}
        for k, v in state.items():
            buffers[k].copy_(v.detach(), non_blocking=True)
        if any(v.device.type == "cuda" for v in state.values()):
            torch.cuda.synchronize()
        self._best_state = buffers

    @property
    def best_state(self) -> dict[str, torch.Tensor] | None:
        """The CPU copy of the best weights (``None`` before the first improvement with a model)."""
        return self._best_state

    @torch.no_grad()
    def restore(self, model: nn.Module) -> bool:
        """Copy the best weights back into ``model`` in place; return False when there are none."""
        if self._best_state is None:
            return False
        model.load_state_dict(self._best_state)
        return True

    # ------------------------------------------------------------------ fit callback
    def on_epoch_end(self, state: Any) -> None:
        record = state.history.last
        if self.monitor not in record:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which is not in the history row "
                f"(columns: {sorted(record)}); pass eval_sets so that it is recorded"
            )
        if self.step(record[self.monitor], state.model, epoch=state.epoch):
            state.request_stop(self.message)

    def on_fit_end(self, state: Any) -> None:
        if self.restore_best and self.restore(state.model):
            state.history.meta["restored_epoch"] = self.best_epoch
        if self.best_epoch is not None:
            state.history.meta["best_epoch"] = self.best_epoch

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Counters, best value and (when kept) the best weights, as plain values and tensors."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "epoch": self.epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "reason": None if self.reason is None else self.reason.name,
            "best_state": None if self._best_state is None else dict(self._best_state),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch = state["best_epoch"]
        self.epoch = int(state["epoch"])
        self.wait = int(state["wait"])
        self.stopped_epoch = state["stopped_epoch"]
        self.reason = None if state["reason"] is None else StopReason[state["reason"]]
        best_state = state.get("best_state")
        self._best_state = None if best_state is None else {k: v.detach().to("cpu", copy=True) for k, v in best_state.items()}

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, patience={self.patience}, "
            f"min_delta={self.min_delta:g}, baseline={self.baseline}, start_from_epoch={self.start_from_epoch}, "
            f"best={self.best}, best_epoch={self.best_epoch}, wait={self.wait})"
        )


class EMA:
    """Exponential moving average of a model's parameters, ``ema ← decay·ema + (1 − decay)·w``.

    Built on ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` (one
    fused ``_foreach_lerp_`` per device and dtype). As in ``AveragedModel``, the first
    :meth:`update` copies the weights; later ones average. Buffers (BatchNorm statistics) are
    averaged only with ``use_buffers=True``; otherwise :meth:`swap` exchanges parameters only and
    the model keeps its own buffers.

    Polyak & Juditsky, "Acceleration of stochastic approximation by averaging" (1992); the
    exponential form is the one used by e.g. Tan & Le, EfficientNet (2019).

    Args:
        model: the model being trained (it is deep-copied once; not modified).
        decay: weight of the running average, in ``[0, 1)`` (e.g. 0.999).
        use_buffers: also average floating-point buffers, and swap buffers in :meth:`swap`.
        device: where to keep the average (e.g. ``"cpu"`` to spare accelerator memory).

    Raises:
        ValueError: if ``decay`` is outside ``[0, 1)``.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> ema = EMA(model, decay=0.9)
        >>> ema.update(model)          # in a loop: after every optimizer.step()
        >>> with ema.swap():           # evaluate the averaged weights, then put the live ones back
        ...     _ = model(torch.zeros(1, 2))
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.999,
        *,
        use_buffers: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a number in [0, 1); received decay={decay!r}")
        self.decay = float(decay)
        self.use_buffers = use_buffers
        self.model = model
        self.averaged = AveragedModel(
            model, device=device, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=use_buffers
        )
        self.averaged.requires_grad_(False)

    @property
    def num_updates(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module | None = None) -> None:
        """Fold the current weights of ``model`` (default: the one given at construction) in."""
        self.averaged.update_parameters(model if model is not None else self.model)

    def _pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        own = list(model.parameters())
        avg = list(self.averaged.module.parameters())
        if self.use_buffers:
            own += list(model.buffers())
            avg += list(self.averaged.module.buffers())
        if len(own) != len(avg) or any(a.shape != b.shape for a, b in zip(own, avg)):
            raise ValueError("model does not have the structure of the model this EMA was built from")
        return list(zip(own, avg))

    @contextlib.contextmanager
    def swap(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        """Context in which ``model`` holds the averaged weights; the live ones come back on exit."""
        model = model if model is not None else self.model
        pairs = self._pairs(model)
        with torch.no_grad():
            saved = [p.detach().clone() for p, _ in pairs]
            for p, a in pairs:
                p.copy_(a)
        try:
            yield model
        finally:
            with torch.no_grad():
                for (p, _), s in zip(pairs, saved):
                    p.copy_(s)

    @torch.no_grad()
    def copy_to(self, model: nn.Module | None = None) -> None:
        """Write the averaged weights into ``model`` for good (e.g. before saving for inference)."""
        for p, a in self._pairs(model if model is not None else self.model):
            p.copy_(a)

    # fit callback: update after every optimizer step
    def on_step_end(self, state: Any) -> None:
        self.update(state.model)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "averaged": dict(self.averaged.state_dict())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"state was saved with decay={state['decay']!r}; this EMA has decay={self.decay!r}")
        self.averaged.load_state_dict(state["averaged"])

    def __repr__(self) -> str:
        return f"EMA(decay={self.decay}, num_updates={self.num_updates}, use_buffers={self.use_buffers})"
