"""The reference training loop: small, explicit, and driven by callbacks.

``fit`` does one thing: for each epoch, run the optimizer over the training batches, then
evaluate the named evaluation sets and append one row to a :class:`History`. Everything a
regularizer needs to do happens in a callback at a documented point of the step:

.. code-block:: text

    on_fit_start(state)
    for each epoch:
        on_epoch_start(state)
        for each batch:
            loss = loss_fn(model(x), y)          # under autocast when autocast_dtype is set
            [non-finite loss -> stop, reason "non-finite training loss"]
            optimizer.zero_grad(); loss.backward()
            on_after_backward(state)             # e.g. add a penalty gradient into .grad
            [clip_grad_norm, when set]
            on_before_step(state)                # e.g. monitors read pre-step weights
            optimizer.step()
            on_step_end(state)                   # e.g. max-norm, EMA, lr schedule per step
        evaluate every set; append a History row
        on_epoch_end(state)                      # e.g. early stopping sets state.stop
        on_checkpoint(state)                     # after every on_epoch_end: the epoch is final
    on_fit_end(state)                            # e.g. restore the best weights

A callback is any object with some of these methods; missing ones are skipped. The loop never
forces itself on anyone: each component also works from a hand-written loop.

Resume: ``LoopState.state_dict()`` captures everything the loop needs to continue bit for bit
(epoch, step, history, the RNG states of torch/numpy/python, the training loader's state and
every callback's ``state_dict``); :class:`reglab.checkpoint.Checkpointer` saves it with the model
and optimizer, and ``fit(..., resume=path_or_directory)`` loads it back.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import torch
from torch import nn

__all__ = [
    "Callback",
    "History",
    "LoopState",
    "LRScheduler",
    "evaluate",
    "fit",
]

HOOKS = (
    "on_fit_start",
    "on_epoch_start",
    "on_after_backward",
    "on_before_step",
    "on_step_end",
    "on_epoch_end",
    "on_checkpoint",
    "on_fit_end",
)


class Callback(Protocol):
    """Any subset of the hooks below; each receives the :class:`LoopState`."""

    def on_fit_start(self, state: LoopState) -> None: ...
    def on_epoch_start(self, state: LoopState) -> None: ...
    def on_after_backward(self, state: LoopState) -> None: ...
    def on_before_step(self, state: LoopState) -> None: ...
    def on_step_end(self, state: LoopState) -> None: ...
    def on_epoch_end(self, state: LoopState) -> None: ...
    def on_checkpoint(self, state: LoopState) -> None: ...
    def on_fit_end(self, state: LoopState) -> None: ...


class History:
    """Per-epoch records of a run: a list of flat dicts, plus free-form metadata.

    ``history["val_loss"]`` returns one column as a list (``nan`` where a row lacks the key).
    Saved as JSON (``{"meta": ..., "records": [...]}``) or CSV (one row per epoch).
    """

    def __init__(self, records: Iterable[Mapping[str, Any]] = (), meta: Mapping[str, Any] | None = None):
        self.records: list[dict[str, Any]] = [dict(r) for r in records]
        self.meta: dict[str, Any] = dict(meta or {})

    def append(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list[Any]:
        if not any(key in r for r in self.records):
            raise KeyError(f"no column {key!r} in history; columns are {self.columns}")
        return [r.get(key, math.nan) for r in self.records]

    def __contains__(self, key: object) -> bool:
        return any(key in r for r in self.records)

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.records:
            cols.extend(k for k in r if k not in cols)
        return cols

    @property
    def last(self) -> dict[str, Any]:
        if not self.records:
            raise IndexError("history is empty")
        return self.records[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "records": self.records}

    def state_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.records = [dict(r) for r in state["records"]]
        self.meta = dict(state.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        """Write JSON or CSV, chosen by the suffix of ``path``."""
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=1, default=_json_default))
        elif path.suffix == ".csv":
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                writer.writeheader()
                writer.writerows(self.records)
        else:
            raise ValueError(f"path must end in .json or .csv; received path={str(path)!r}")
        return path

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a history written by :meth:`save` (JSON or CSV)."""
        path = Path(path)
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or "records" not in data:
                raise ValueError(f"{path} is not a reglab history JSON (no 'records' key)")
            return cls(data["records"], data.get("meta"))
        if path.suffix == ".csv":
            with path.open(newline="") as f:
                rows = [{k: _parse_number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
            return cls(rows)
        raise ValueError(f"path must end in .json or .csv; received path={str(path)!r}")

    def __repr__(self) -> str:
        return f"History(epochs={len(self)}, columns={self.columns})"


def _parse_number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


@dataclass
class LoopState:
    """What callbacks see and may change. ``stop=True`` ends training after the current step.

    ``callbacks`` and ``train_data`` are the ones passed to :func:`fit` (read-only for callbacks);
    :meth:`state_dict` / :meth:`load_state_dict` capture and restore what a resume needs.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    epoch: int = 0  # epochs completed so far; the running epoch is ``epoch + 1`` during training
    step: int = 0  # optimizer steps taken
    batch: tuple[torch.Tensor, ...] | None = None
    loss: torch.Tensor | None = None
    stop: bool = False
    stop_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    callbacks: Sequence[Any] = ()
    train_data: Any = None

    def request_stop(self, reason: str) -> None:
        self.stop = True
        self.stop_reason = self.stop_reason or reason

    def state_dict(self) -> dict[str, Any]:
        """Loop counters, history, RNG states, the loader's and the callbacks' states.

        Model and optimizer are not included (a checkpoint stores them next to this).
        """
        return {
            "epoch": self.epoch,
            "step": self.step,
            "stop": self.stop,
            "stop_reason": self.stop_reason,
            "history": self.history.state_dict(),
            "rng": rng_state(),
            "train_data": self.train_data.state_dict() if hasattr(self.train_data, "state_dict") else None,
            "callbacks": {
                _callback_key(i, cb): cb.state_dict() for i, cb in enumerate(self.callbacks) if hasattr(cb, "state_dict")
            },
        }

    def load_state_dict(self, state: Mapping[str, Any], *, rng: bool = True) -> None:
        """Restore what :meth:`state_dict` captured, the RNG states included unless ``rng=False``.

        Raises:
            ValueError: if a callback with state has no entry in ``state`` (the callbacks differ
                from those of the saved run) or the loader state is missing.
        """
        saved = state["callbacks"]
        wanted = {_callback_key(i, cb): cb for i, cb in enumerate(self.callbacks) if hasattr(cb, "load_state_dict")}
        missing = sorted(set(wanted) - set(saved))
        if missing:
            raise ValueError(
                f"the checkpoint has no state for callbacks {missing}; it holds {sorted(saved)} "
                "(pass the same callbacks, in the same order, as the run that saved it)"
            )
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.stop = bool(state["stop"])
        self.stop_reason = state["stop_reason"]
        self.history.load_state_dict(state["history"])
        for key, cb in wanted.items():
            cb.load_state_dict(saved[key])
        if hasattr(self.train_data, "load_state_dict"):
            if state.get("train_data") is None:
                raise ValueError("the checkpoint has no state for train_data, which has load_state_dict")
            self.train_data.load_state_dict(state["train_data"])
        if rng:
            set_rng_state(state["rng"])


def _callback_key(index: int, callback: Any) -> str:
    return f"{index}:{type(callback).__qualname__}"


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and initialised CUDA devices), numpy and ``random``."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _np_random().get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    np_state = state["numpy"]
    _np_random().set_state(tuple(np_state) if isinstance(np_state, list) else np_state)
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in state["cuda"]])


def _np_random() -> Any:
    import numpy as np

    return np.random


class LRScheduler:
    """Steps a ``torch.optim.lr_scheduler`` per ``"epoch"`` or per ``"step"``."""

    def __init__(self, scheduler: Any, interval: str = "epoch") -> None:
        if interval not in ("epoch", "step"):
            raise ValueError(f"interval must be 'epoch' or 'step'; received interval={interval!r}")
        self.scheduler = scheduler
        self.interval = interval

    def on_step_end(self, state: LoopState) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def on_epoch_end(self, state: LoopState) -> None:
        if self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def _load_resume(resume: str | os.PathLike, state: LoopState) -> dict[str, Any] | None:
    from reglab import checkpoint  # components layer; imported lazily to keep the loop light

    path = Path(resume)
    if path.is_dir() or not path.exists() and path.suffix != ".safetensors":
        found = checkpoint.latest(path)
        if found is None:
            return None
        path = found
    ckpt = checkpoint.load(path, state.model, state.optimizer)
    if "loop" not in ckpt.extra:
        raise ValueError(f"resume={str(resume)!r}: {path} holds no loop state (it was not written by a Checkpointer)")
    state.load_state_dict(ckpt.extra["loop"], rng=False)
    state.extra["resumed_from"] = str(path)
    return ckpt.extra["loop"]


def _is_classification(out: torch.Tensor, y: torch.Tensor) -> bool:
    return out.ndim == 2 and y.ndim == 1 and not torch.is_floating_point(y)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Iterable[Sequence[torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Mean loss (and accuracy for class-index targets) of ``model`` over ``data`` in eval mode.

    The model's train/eval mode is restored afterwards. ``loss_fn`` must average over the batch.
    """
    was_training = model.training
    model.eval()
    total, loss_sum, correct, classification = 0, 0.0, 0, True
    try:
        for x, y in data:
            if device is not None:
                x, y = x.to(device), y.to(device)
            out = model(x)
            n = y.shape[0]
            loss_sum += float(loss_fn(out, y)) * n
            total += n
            if classification and _is_classification(out, y):
                correct += int((out.argmax(1) == y).sum())
            else:
                classification = False
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("data must yield at least one batch; received an empty iterable")
    result = {"loss": loss_sum / total}
    if classification:
        result["acc"] = correct / total
    return result


def fit(
    model: nn.Module,
    train_data: Iterable[Sequence[torch.Tensor]],
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epochs: int,
    eval_sets: Mapping[str, Iterable[Sequence[torch.Tensor]]] | None = None,
    eval_loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    eval_train: Iterable[Sequence[torch.Tensor]] | None = None,
    callbacks: Sequence[Any] = (),
    clip_grad_norm: float | None = None,
    autocast_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    history: History | None = None,
    progress: Callable[[LoopState], None] | None = None,
    resume: str | os.PathLike | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs and return the per-epoch :class:`History`.

    Each History row holds ``epoch``, ``step``, ``lr`` (first group), ``train_loss`` (mean of the
    batch losses of the epoch, in train mode, data loss only: penalties added by callbacks are not
    included), ``train_acc`` for class-index targets, ``time`` (seconds of the epoch), and for each
    name in ``eval_sets`` ``{name}_loss`` / ``{name}_acc`` computed in eval mode with
    ``eval_loss_fn`` (default ``loss_fn``). When ``eval_train`` is given, ``train_loss`` and
    ``train_acc`` come instead from an eval-mode pass over it (no dropout; the honest number to
    compare with validation) and the running means are kept as ``train_loss_running``.

    Args:
        model: any ``nn.Module``; it is trained in place.
        train_data: iterable of ``(x, y)`` batches, iterated once per epoch.
        optimizer: any ``torch.optim.Optimizer`` over the model's parameters.
        loss_fn: ``loss_fn(output, target)`` averaged over the batch.
        epochs: number of epochs to run (>= 0) after those already in ``history``.
        eval_sets: named evaluation iterables, e.g. ``{"val": ..., "test": ...}``.
        eval_loss_fn: loss used for evaluation (e.g. plain cross-entropy when training smooths).
        eval_train: training data to evaluate in eval mode each epoch.
        callbacks: objects with some of the hooks listed in this module's docstring.
        clip_grad_norm: clip the global gradient norm after ``on_after_backward``.
        autocast_dtype: run forward and loss under ``torch.autocast`` with this dtype.
        device: move each batch to this device (the model must already be there).
        history: continue this history (its last epoch number is the starting point).
        progress: called with the state after each epoch (e.g. to advance a progress bar).
        resume: a checkpoint file written by :class:`reglab.checkpoint.Checkpointer` (or
            :func:`reglab.checkpoint.save` with ``extra={"loop": state.state_dict()}``), or a
            directory, whose newest ``epoch-N.safetensors`` is used (an empty or missing directory
            starts from scratch, so an interrupted command can be rerun unchanged). The model,
            optimizer, history, step, RNG states, ``train_data`` state and callbacks' states are
            restored; pass the same callbacks in the same order. With ``resume``, ``epochs`` is
            the **total** for the run, counting the checkpoint's epochs (as Keras
            ``BackupAndRestore``, Lightning ``max_epochs`` and HF ``num_train_epochs``); on CPU
            with the same seeds the continued run is bit-identical to an uninterrupted one.

    Returns:
        The history. Training stops early when a callback sets ``state.stop`` or the training loss
        is not finite (``history.meta["stop_reason"]`` says why); ``on_fit_end`` runs in every case.

    Raises:
        ValueError: for ``epochs < 0``, ``clip_grad_norm <= 0``, both ``history`` and ``resume``,
            or a checkpoint that does not match the callbacks.
        reglab.checkpoint.CheckpointError: for a checkpoint file that fails validation.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0; received epochs={epochs!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0; received clip_grad_norm={clip_grad_norm!r}")
    if resume is not None and history is not None:
        raise ValueError("pass either history or resume, not both (a checkpoint holds its own history)")
    eval_sets = dict(eval_sets or {})
    eval_loss_fn = eval_loss_fn or loss_fn
    history = history if history is not None else History()
    start_epoch = int(history.last["epoch"]) if len(history) else 0
    state = LoopState(
        model=model,
        optimizer=optimizer,
        history=history,
        epoch=start_epoch,
        callbacks=tuple(callbacks),
        train_data=train_data,
    )
    if len(history):
        state.step = int(history.last.get("step", 0))
    loop_state = _load_resume(resume, state) if resume is not None else None
    if loop_state is not None:
        epochs = max(0, epochs - state.epoch)
    hooks = {name: [getattr(cb, name) for cb in callbacks if hasattr(cb, name)] for name in HOOKS}

    def call(name: str) -> None:
        for hook in hooks[name]:
            hook(state)

    dev_type = torch.device(device).type if device is not None else "cpu"
    amp = (
        torch.autocast(dev_type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    params = [p for p in model.parameters() if p.requires_grad]

    call("on_fit_start")
    if loop_state is not None:
        set_rng_state(loop_state["rng"])  # last, so that nothing before the first batch draws from it
    for _ in range(epochs):
        if state.stop:
            break
        call("on_epoch_start")
        model.train()
        t0 = time.perf_counter()
        loss_sum, n_seen, correct, classification = 0.0, 0, 0, True
        for batch in train_data:
            if device is not None:
                batch = tuple(t.to(device) for t in batch)
            x, y = batch[0], batch[1]
            state.batch = batch
            with amp:
                out = model(x)
                loss = loss_fn(out, y)
            if not torch.isfinite(loss):
                state.request_stop(f"non-finite training loss ({loss.item()}) at step {state.step + 1}")
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.loss = loss.detach()
            call("on_after_backward")
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            call("on_before_step")
            optimizer.step()
            state.step += 1
            call("on_step_end")
            n = y.shape[0]
            loss_sum += float(state.loss) * n
            n_seen += n
            if classification and _is_classification(out, y):
                correct += int((out.detach().argmax(1) == y).sum())
            else:
                classification = False
            if state.stop:
                break
        if n_seen == 0:
            break
        state.epoch += 1
        record: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.step,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / n_seen,
        }
        if classification:
            record["train_acc"] = correct / n_seen
        if eval_train is not None:
            record["train_loss_running"] = record.pop("train_loss")
            record.pop("train_acc", None)
            for key, value in evaluate(model, eval_train, eval_loss_fn, device=device).items():
                record[f"train_{key}"] = value
        for name, data in eval_sets.items():
            for key, value in evaluate(model, data, eval_loss_fn, device=device).items():
                record[f"{name}_{key}"] = value
        record["time"] = time.perf_counter() - t0
        history.append(record)
        call("on_epoch_end")
        call("on_checkpoint")
        if progress is not None:
            progress(state)
    if state.stop_reason is not None:
        history.meta["stop_reason"] = state.stop_reason
        history.meta["stopped_epoch"] = state.epoch
    call("on_fit_end")
    return history
