"""Atomic, pickle-free checkpoints: one safetensors file per checkpoint.

A checkpoint is a single ``.safetensors`` file. Every tensor (model weights, optimizer moments,
RNG states, a callback's best weights) is a safetensors entry; everything else (optimizer
hyperparameters, epoch counters, history) is JSON in the file's metadata header, where tensors
are referenced by name. Reading it runs no code: there is no pickle anywhere, so a checkpoint
from an untrusted source can at worst fail validation.

Writes are **atomic**: the file is written under a temporary name in the same directory,
flushed with ``fsync``, then renamed over the target with ``os.replace`` (and the directory is
fsynced), so a crash or ``kill -9`` at any moment leaves either the previous checkpoint or the
new one, never a torn file. A SHA-256 digest of the tensors is stored and checked on load.
A write killed midway leaves only a hidden ``.NAME.*.tmp`` directory, which may be deleted.

Example:
    >>> import tempfile, torch
    >>> from reglab import checkpoint
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    >>> path = checkpoint.save(tempfile.mkdtemp() + "/ckpt.safetensors", model, opt, {"epoch": 3})
    >>> checkpoint.load(path, model, opt).extra["epoch"]
    3
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "FORMAT",
    "latest",
    "load",
    "read",
    "save",
]

FORMAT = "reglab.checkpoint"
VERSION = 1
_META_KEY = "reglab"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.safetensors$")


class CheckpointError(ValueError):
    """A file is not a valid reglab checkpoint (wrong format, corrupted, or mismatched)."""


# ---------------------------------------------------------------------------------- encoding
# JSON cannot hold tensors, tuples, non-string keys or NaN; each gets a tagged object.
_TAGS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__", "__float__", "__dtype__")


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._storages: set[tuple[str, int]] = set()

    def _add(self, t: torch.Tensor) -> str:
        name = f"t{len(self.tensors)}"
        t = t.detach().to("cpu")
        key = (str(t.device), t.untyped_storage().data_ptr())
        # safetensors refuses tensors that share memory (tied weights, views): store copies.
        if key in self._storages or not t.is_contiguous() or t.storage_offset() != 0 or t.numel() != t.untyped_storage().nbytes() // max(t.element_size(), 1):
            t = t.clone(memory_format=torch.contiguous_format)
        elif t.numel() > 0:
            self._storages.add(key)
        self.tensors[name] = t
        return name

    def encode(self, obj: Any, where: str) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, torch.Tensor):
            return {"__tensor__": self._add(obj)}
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": self._add(torch.from_numpy(np.ascontiguousarray(obj))), "dtype": str(obj.dtype)}
        if isinstance(obj, np.generic):
            return self.encode(obj.item(), where)
        if isinstance(obj, torch.dtype):
            return {"__dtype__": str(obj).removeprefix("torch.")}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) and k not in _TAGS for k in obj):
                return {k: self.encode(v, f"{where}.{k}") for k, v in obj.items()}
            return {"__dict__": [[self.encode(k, where), self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
        raise TypeError(
            f"cannot store {type(obj).__name__} at {where} in a checkpoint: only tensors, numpy arrays, "
            "numbers, strings, None, lists, tuples and dicts are stored (no pickle)"
        )


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"], copy=True)
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__dtype__" in obj:
        dtype = getattr(torch, obj["__dtype__"], None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"unknown dtype {obj['__dtype__']!r} in checkpoint")
        return dtype
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _references(obj: Any, out: set[str]) -> set[str]:
    if isinstance(obj, list):
        for v in obj:
            _references(v, out)
    elif isinstance(obj, dict):
        for tag in ("__tensor__", "__ndarray__"):
            if tag in obj:
                out.add(obj[tag])
        for v in obj.values():
            _references(v, out)
    return out


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{str(t.dtype)}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


# ---------------------------------------------------------------------------------- files
def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # A private hidden directory in the same filesystem: safetensors may create its own temporary
    # file next to the name it is given, and every partial file stays inside this directory.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _state_dict_of(obj: Any) -> Any:
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def save(
    path: str | os.PathLike,
    model: nn.Module | Mapping[str, torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: target file (conventionally ``*.safetensors``); parent directories are created.
        model: a module or a ``state_dict``; stored as safetensors entries (tied or shared
            tensors are stored as copies and come back tied when loaded into the model).
        optimizer: an optimizer or its ``state_dict``: tensors (moments, step counts) go to
            safetensors, hyperparameters to JSON (tuples and integer keys are preserved).
        extra: any nest of dicts/lists/tuples of tensors, numpy arrays, numbers, strings and
            ``None`` (e.g. epoch, history, RNG states, callbacks' state).

    Returns:
        ``Path(path)``.

    Raises:
        TypeError: if ``extra`` holds an object that cannot be stored without pickle.
    """
    path = Path(path)
    enc = _Encoder()
    content = {
        "model": enc.encode(_state_dict_of(model), "model") if model is not None else None,
        "optimizer": enc.encode(_state_dict_of(optimizer), "optimizer") if optimizer is not None else None,
        "extra": enc.encode(dict(extra or {}), "extra"),
    }
    header = {"format": FORMAT, "version": VERSION, "sha256": _digest(enc.tensors), "content": content}
    _atomic_write(path, enc.tensors, {_META_KEY: json.dumps(header, allow_nan=False)})
    return path


@dataclass
class Checkpoint:
    """What :func:`read` / :func:`load` return: the stored states, decoded."""

    path: Path
    model: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


def read(path: str | os.PathLike, *, verify: bool = True) -> Checkpoint:
    """Read and validate a checkpoint without touching any model.

    Args:
        path: a file written by :func:`save`.
        verify: recompute the SHA-256 digest of the tensors and compare it with the stored one.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        CheckpointError: if the file is not a safetensors file, not a reglab checkpoint, of an
            unknown version, has missing tensors, or fails the digest check.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from err
    if _META_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a reglab checkpoint (no {_META_KEY!r} metadata)")
    try:
        header = json.loads(metadata[_META_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT or "content" not in header:
        raise CheckpointError(f"{path}: metadata does not describe a {FORMAT} file")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {header.get('version')!r} is not supported (expected {VERSION})")
    content = header["content"]
    missing = _references(content, set()) - set(tensors)
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} referenced tensors are missing, e.g. {sorted(missing)[:3]}")
    if verify and _digest(tensors) != header.get("sha256"):
        raise CheckpointError(f"{path}: tensor data does not match the stored SHA-256 digest (corrupted file)")
    decoded = {k: _decode(v, tensors) for k, v in content.items()}
    return Checkpoint(path=path, model=decoded["model"], optimizer=decoded["optimizer"], extra=decoded["extra"] or {})


def load(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    strict: bool = True,
    verify: bool = True,
) -> Checkpoint:
    """Read a checkpoint (see :func:`read`) and load it into ``model`` and ``optimizer``.

    Args:
        path: a file written by :func:`save`.
        model: loaded with ``load_state_dict(strict=strict)`` (tensors are copied in place,
            onto the model's device).
        optimizer: loaded with ``load_state_dict`` (moved onto its parameters' devices).
        strict: require the model's keys to match exactly.
        verify: check the SHA-256 digest of the tensors.

    Returns:
        The decoded :class:`Checkpoint` (``extra`` holds what was passed to :func:`save`).

    Raises:
        CheckpointError: for an invalid file, or when the file has no model/optimizer state but
            one was given, or the model's keys or shapes do not match.
    """
    ckpt = read(path, verify=verify)
    if model is not None:
        if ckpt.model is None:
            raise CheckpointError(f"{ckpt.path} holds no model state")
        try:
            model.load_state_dict(ckpt.model, strict=strict)
        except RuntimeError as err:
            raise CheckpointError(f"{ckpt.path} does not fit this model: {err}") from err
    if optimizer is not None:
        if ckpt.optimizer is None:
            raise CheckpointError(f"{ckpt.path} holds no optimizer state")
        try:
            optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{ckpt.path} does not fit this optimizer: {err}") from err
    return ckpt


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest ``epoch-N.safetensors`` in ``directory`` (highest ``N``), or None.

    Temporary files of an interrupted write are hidden (``.epoch-N.safetensors.*.tmp``) and ignored.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH_FILE.match(p.name))]
    return max(found)[1] if found else None


def _is_main_process() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class Checkpointer:
    """A :func:`reglab.fit` callback that saves a resumable checkpoint every ``every`` epochs.

    Each checkpoint (``directory/epoch-N.safetensors``, written atomically) holds the model, the
    optimizer, and the loop state from ``LoopState.state_dict()``: epoch, step, history, the RNG
    states of torch/numpy/python, the training loader's state (e.g. :class:`reglab.TensorLoader`'s
    generator) and every callback's ``state_dict``. It saves in the loop's ``on_checkpoint`` hook,
    which runs after every ``on_epoch_end`` hook, so the stopping decision of the epoch is in it;
    it also saves the epoch at which training stops. Resume with ``fit(..., resume=directory)``.
    Under ``torch.distributed`` only rank 0 writes.

    Args:
        directory: where the checkpoints go (created when missing).
        every: save every ``every`` epochs (>= 1).
        keep: how many of the newest checkpoints to keep (>= 1), or ``None`` to keep all.

    Raises:
        ValueError: for ``every < 1`` or ``keep < 1``.

    Example (with a model and data of your own; rerunning the same command resumes)::

            ckpt = Checkpointer("runs/ckpt", every=2, keep=3)
            reglab.fit(model, loader, ..., epochs=50, callbacks=[ckpt], resume="runs/ckpt")
    """

    def __init__(self, directory: str | os.PathLike, every: int = 1, keep: int | None = 2) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1; received every={every!r}")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be an int >= 1 or None; received keep={keep!r}")
        self.directory = Path(directory)
        self.every = every
        self.keep = keep
        self.saved: list[Path] = []

    def path_for(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch:06d}.safetensors"

    def on_checkpoint(self, state: Any) -> None:
        if state.epoch % self.every and not state.stop:
            return
        if not _is_main_process():
            return
        path = save(self.path_for(state.epoch), state.model, state.optimizer, {"loop": state.state_dict()})
        if path not in self.saved:
            self.saved.append(path)
        self._prune()

    def _prune(self) -> None:
        if self.keep is None:
            return
        files = sorted((int(m.group(1)), p) for p in self.directory.iterdir() if (m := _EPOCH_FILE.match(p.name)))
        for _, p in files[: -self.keep]:
            with contextlib.suppress(OSError):
                p.unlink()

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "keep": self.keep}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"Checkpointer({str(self.directory)!r}, every={self.every}, keep={self.keep})"
