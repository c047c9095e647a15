"""Training monitors: what regularization is doing to the weights, step by step.

Each monitor is a callback for :func:`reglab.fit` (hooks ``on_before_step`` / ``on_step_end``)
and also works from any loop through two plain methods::

    mon.before_step(optimizer, step)     # just before optimizer.step(); step = steps taken so far
    optimizer.step()
    mon.after_step(optimizer, step + 1)  # just after

Every ``every`` optimizer steps (default :data:`DEFAULT_EVERY`), a monitor appends records to
``mon.records``, a list of flat dicts ``{"step", "epoch", "group", <metric>: value}``, one per
parameter group (groups are named by their ``"name"`` key, else ``"group{i}"``) or per tensor
where the metric is per tensor. ``mon.to_history()`` wraps them in a :class:`reglab.History`
(CSV/JSON), ``mon.series(metric, group)`` returns ``[(step, value), ...]``, and
``state_dict()`` / ``load_state_dict()`` save and restore the records, so a resumed run keeps
its curves. Work happens only on recorded steps: between them a monitor costs one integer test
per hook (pre-step copies and activation hooks are armed only for the steps that record).

Monitors:

* :class:`WeightNorm` — ``weight_norm``: the L2 norm of all parameters of each group.
* :class:`UpdateRatio` — ``update_ratio``: ``‖Δw‖ / ‖w‖`` of the step, per group (a healthy
  order of magnitude is 1e-3 for Adam-type training; Karpathy's rule of thumb).
* :class:`EffectiveLR` — for **scale-invariant** weights (a Linear/Conv whose output goes straight
  into a normalization layer), ``effective_lr = lr / ‖w‖²``, ``weight_norm`` and the
  ``angular_update`` (angle between ``w`` before and after the step). Such a loss does not
  change when ``w`` is scaled, so the gradient is orthogonal to ``w`` and shrinks as ``1/‖w‖``:
  plain SGD moves the direction of ``w`` by ``lr·‖g‖/‖w‖ ∝ lr/‖w‖²``. Without weight decay the
  norm only grows (``‖w + Δ‖² = ‖w‖² + ‖Δ‖²``) and the effective rate decays; with weight decay
  ``λ`` the norm settles where growth and decay balance and the angular update per step reaches
  ``sqrt(2·lr·λ)`` (van Laarhoven, "L2 Regularization versus Batch and Weight Normalization",
  2017; Wan et al., "Spherical Motion Dynamics", NeurIPS 2021). For Adam-type optimizers the
  step is already scale-free, so the angle moves as ``lr/‖w‖``; ``angular_update`` is the
  optimizer-independent number to read.
* :class:`Bf16LostUpdates` — ``bf16_lost``: the fraction of the step's nonzero updates that
  would be (fp32 parameters) or were (bf16 parameters) lost to bfloat16 rounding, i.e.
  ``|Δ| < ½·ulp_bf16(w)``: an update smaller than half the spacing of bf16 numbers at ``w``
  rounds back to ``w`` (Zamirai et al., "Revisiting BFloat16 Training", 2020). For bf16
  parameters the intended update is unknown after the fact: the fraction counts entries with a
  nonzero gradient whose value did not change.
* :class:`Sparsity` — ``sparsity``: the fraction of exact zeros in each group (L1 penalties with
  a proximal step produce exact zeros; plain subgradient L1 does not).
* :class:`DeadReLU` — ``dead_fraction`` per ``nn.ReLU`` module: the fraction of units (features,
  or channels for ``N×C×…`` activations) that output zero for every example of the recorded
  training batch. Only ``nn.ReLU`` modules are seen (``F.relu`` cannot be hooked).

:func:`default_monitors` returns all of them at the default interval; the overhead benchmark is
``bench/bench_monitors.py`` (target: at most 3 % of step time).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "DEFAULT_EVERY",
    "Bf16LostUpdates",
    "DeadReLU",
    "EffectiveLR",
    "Monitor",
    "Sparsity",
    "UpdateRatio",
    "WeightNorm",
    "bf16_ulp",
    "default_monitors",
    "scale_invariant_weights",
]

DEFAULT_EVERY = 100
_EXP = 0x7F800000  # exponent field of a float32

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
LINEAR_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


_NORM_NAME = re.compile(r"(norm(\d+d)?|normalization)$", re.IGNORECASE)


def _is_norm(module: nn.Module) -> bool:
    """Normalization layers: torch's classes and any class named like one (``LlamaRMSNorm``)."""
    return isinstance(module, NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))


def bf16_ulp(w: torch.Tensor) -> torch.Tensor:
    """Spacing of bfloat16 numbers at ``|w|``: ``2^(floor(log2|w|) − 7)`` (8 significant bits).

    Read from the float32 exponent bits (bf16 shares float32's exponent), so it is exact and
    cheap. Zero and values below ``2^-119`` map to ``2^-126`` (their spacing is finer; no
    realistic update is lost there). Computed in float32.

    Example:
        >>> bf16_ulp(torch.tensor([1.0, 3.0, 0.01])).tolist()
        [0.0078125, 0.015625, 6.103515625e-05]
    """
    bits = w.detach().float().view(torch.int32).bitwise_and(_EXP)  # biased exponent field
    bits = bits.sub_(7 << 23).clamp_(min=1 << 23)  # exponent − 7 (at least the smallest normal)
    return bits.view(torch.float32)


def scale_invariant_weights(model: nn.Module, inputs: Any = None) -> dict[str, str]:
    """Find weights whose output goes straight into a normalization layer.

    Two sources are combined: consecutive children of every ``nn.Sequential`` (a Linear/Conv
    followed by a norm layer), and, when ``inputs`` are given, a forward pass (in eval mode, no
    gradient, modes restored) that records which Linear/Conv output tensor each norm layer
    receives. The loss is then invariant to scaling that weight (and its bias, which a
    BatchNorm removes anyway).

    Args:
        model: the model.
        inputs: optional example inputs: a tensor, a tuple of positional inputs or a dict of
            keyword inputs.

    Returns:
        ``{weight parameter name: norm module name}``.
    """
    found: dict[str, str] = {}
    for pairs in (_sequential_pairs(model), _traced_pairs(model, inputs) if inputs is not None else []):
        for producer, consumer in pairs:
            mod = model.get_submodule(producer)
            if isinstance(mod, LINEAR_TYPES) and _is_norm(model.get_submodule(consumer)):
                if getattr(mod, "weight", None) is not None:
                    found[f"{producer}.weight" if producer else "weight"] = consumer
    return found


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a, _), (b, _) in zip(children, children[1:]):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a, prefix + b))
    return pairs


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _traced_pairs(model: nn.Module, inputs: Any, *, train: bool = False) -> list[tuple[str, str]]:
    """``(producer, consumer)`` leaf-module pairs where the consumer's first input is the producer's output.

    Outputs are kept alive during the pass so tensor storage cannot be reused (which would fake
    a match); the model's train/eval modes are restored afterwards.
    """
    leaves = {name: m for name, m in model.named_modules() if name and not list(m.children())}
    outputs: dict[tuple[int, int, tuple], str] = {}
    keep: list[torch.Tensor] = []
    pairs: list[tuple[str, str]] = []
    handles = []

    def key(t: torch.Tensor) -> tuple[int, int, tuple]:
        return (t.data_ptr(), t.storage_offset(), tuple(t.shape))

    def post(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                keep.append(output)
                outputs[key(output)] = name

        return hook

    def pre(name):
        def hook(module, args):
            if args and isinstance(args[0], torch.Tensor):
                producer = outputs.get(key(args[0]))
                if producer is not None and producer != name:
                    pairs.append((producer, name))

        return hook

    modes = {name: m.training for name, m in model.named_modules()}
    try:
        for name, m in leaves.items():
            handles.append(m.register_forward_pre_hook(pre(name)))
            handles.append(m.register_forward_hook(post(name)))
        model.train(train)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            _call(model, inputs)
    finally:
        for h in handles:
            h.remove()
        for name, m in model.named_modules():
            m.training = modes[name]
    return pairs


def _group_name(group: Mapping[str, Any], index: int) -> str:
    name = group.get("name")
    return str(name) if name is not None else f"group{index}"


class Monitor:
    """Base class: interval bookkeeping, records, and state.

    Args:
        every: record every ``every`` optimizer steps (an int >= 1).

    Raises:
        ValueError: if ``every`` is not an int >= 1.
    """

    def __init__(self, every: int = DEFAULT_EVERY) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1; received every={every!r}")
        self.every = every
        self.records: list[dict[str, Any]] = []

    # -- interval -----------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """True when step number ``step`` (1-based count of optimizer steps) is recorded."""
        return step % self.every == 0

    # -- hooks of reglab.fit -------------------------------------------------------------------
    def on_before_step(self, state: Any) -> None:
        self.before_step(state.optimizer, state.step)

    def on_step_end(self, state: Any) -> None:
        self.after_step(state.optimizer, state.step, epoch=state.epoch + 1)

    # -- loop-independent API ------------------------------------------------------------------
    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Call just before ``optimizer.step()``; ``step`` = optimizer steps taken so far."""

    def after_step(self, optimizer: torch.optim.Optimizer, step: int, *, epoch: int | None = None) -> None:
        """Call just after ``optimizer.step()``; ``step`` = optimizer steps taken, this one included."""
        if self.due(step):
            self.record(optimizer, step, epoch)

    def record(self, optimizer: torch.optim.Optimizer, step: int, epoch: int | None) -> None:
        raise NotImplementedError

    def _add(self, step: int, epoch: int | None, group: str, **values: float) -> None:
        row: dict[str, Any] = {"step": step}
        if epoch is not None:
            row["epoch"] = epoch
        row["group"] = group
        row.update(values)
        self.records.append(row)

    # -- results -------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """A copy of the records."""
        return [dict(r) for r in self.records]

    def to_history(self):
        """The records as a :class:`reglab.History` (save it as CSV or JSON)."""
        from reglab.loop import History

        return History(self.records, meta={"monitor": type(self).__name__, "every": self.every})

    def series(self, metric: str, group: str | None = None) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of one metric, for one group (default: the first one recorded)."""
        rows = [r for r in self.records if metric in r]
        if not rows:
            raise KeyError(f"no metric {metric!r} recorded by {type(self).__name__}")
        group = rows[0]["group"] if group is None else group
        return [(r["step"], r[metric]) for r in rows if r["group"] == group]

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "records": self.rows()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        every = state["every"]
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1; received every={every!r}")
        self.every = every
        self.records = [dict(r) for r in state["records"]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(every={self.every}, records={len(self.records)})"


def _groups(optimizer: torch.optim.Optimizer) -> Iterable[tuple[str, dict, list[torch.Tensor]]]:
    for i, group in enumerate(optimizer.param_groups):
        yield _group_name(group, i), group, list(group["params"])


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    if not tensors:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.detach().float()) for t in tensors])))


class _Snapshot(Monitor):
    """Monitors that compare weights before and after a recorded step."""

    def __init__(self, every: int = DEFAULT_EVERY) -> None:
        super().__init__(every)
        self._before: dict[int, torch.Tensor] | None = None

    def before_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.due(step + 1):
            self._before = {id(p): p.detach().clone() for _, _, ps in _groups(optimizer) for p in ps}
        else:
            self._before = None

    def after_step(self, optimizer: torch.optim.Optimizer, step: int, *, epoch: int | None = None) -> None:
        if self.due(step) and self._before is not None:
            self.record(optimizer, step, epoch)
        self._before = None


class WeightNorm(Monitor):
    """Record ``weight_norm``, the L2 norm of each parameter group's tensors taken together.

    Example:
        >>> model = nn.Linear(3, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> mon = WeightNorm(every=1)
        >>> mon.after_step(opt, 1)
        >>> sorted(mon.records[0])
        ['group', 'step', 'weight_norm']
    """

    def record(self, optimizer, step, epoch):
        for name, _, params in _groups(optimizer):
            self._add(step, epoch, name, weight_norm=_norm(params))


class Sparsity(Monitor):
    """Record ``sparsity``, the fraction of exactly-zero entries of each parameter group.

    Example:
        >>> layer = nn.Linear(4, 2, bias=False)
        >>> _ = torch.nn.init.zeros_(layer.weight[:1])
        >>> mon = Sparsity(every=1)
        >>> mon.after_step(torch.optim.SGD(layer.parameters(), lr=0.1), 1)
        >>> mon.records[0]["sparsity"]
        0.5
    """

    def record(self, optimizer, step, epoch):
        for name, _, params in _groups(optimizer):
            total = sum(p.numel() for p in params)
            zeros = sum(int((p.detach() == 0).sum()) for p in params)
            self._add(step, epoch, name, sparsity=zeros / total if total else 0.0)


class UpdateRatio(_Snapshot):
    """Record ``update_ratio = ‖w_after − w_before‖ / ‖w_before‖`` of each group's step.

    Example:
        >>> layer = nn.Linear(4, 2, bias=False)
        >>> opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        >>> layer.weight.grad = layer.weight.detach().clone()  # the step removes 10 % of w
        >>> mon = UpdateRatio(every=1)
        >>> mon.before_step(opt, 0); opt.step(); mon.after_step(opt, 1)
        >>> round(mon.records[0]["update_ratio"], 6)
        0.1
    """

    def record(self, optimizer, step, epoch):
        for name, _, params in _groups(optimizer):
            before = [self._before[id(p)] for p in params]
            delta = _norm([p.detach() - b for p, b in zip(params, before)])
            w = _norm(before)
            self._add(step, epoch, name, update_ratio=delta / w if w > 0 else math.inf if delta > 0 else 0.0)


class Bf16LostUpdates(_Snapshot):
    """Record ``bf16_lost``: the fraction of nonzero updates below half a bf16 ulp of the weight.

    For a float32 parameter the update ``Δ = w_after − w_before`` is lost in bf16 storage when
    ``|Δ| < ½·ulp_bf16(w_before)`` (see :func:`bf16_ulp`); entries with ``Δ = 0`` are not updates
    and are not counted. For a bfloat16 parameter the count is over entries with a nonzero
    gradient, and an entry is lost when its value did not change. Groups without any update
    record ``nan``.

    Example:
        >>> w = nn.Parameter(torch.ones(4))
        >>> opt = torch.optim.SGD([w], lr=1.0)
        >>> w.grad = torch.tensor([1e-4, 1e-4, 0.1, 0.1])  # ½ ulp of 1.0 in bf16 is 2^-8 ≈ 0.0039
        >>> mon = Bf16LostUpdates(every=1)
        >>> mon.before_step(opt, 0); opt.step(); mon.after_step(opt, 1)
        >>> mon.records[0]["bf16_lost"]
        0.5
    """

    def record(self, optimizer, step, epoch):
        for name, _, params in _groups(optimizer):
            lost = total = 0
            for p in params:
                before = self._before[id(p)]
                if p.dtype == torch.bfloat16:
                    if p.grad is None:
                        continue
                    moved = p.grad != 0
                    total += int(moved.sum())
                    lost += int((moved & (p.detach() == before)).sum())
                else:
                    # |Δ| < ½·ulp(w) = 2^(E(w) − 8)  ⟺  E(Δ) < E(w) − 8, with E the float32 exponent
                    # field: integer ops on the exponent bits only (Δ below 2^-126 counts as zero).
                    e_delta = (p.detach().float() - before.float()).view(torch.int32).bitwise_and_(_EXP)
                    e_half = before.float().view(torch.int32).bitwise_and(_EXP).sub_(8 << 23)
                    moved = e_delta != 0
                    total += int(moved.sum())
                    lost += int(e_delta.lt_(e_half).logical_and_(moved).sum())
            self._add(step, epoch, name, bf16_lost=lost / total if total else math.nan)


class EffectiveLR(_Snapshot):
    """Record ``effective_lr = lr/‖w‖²``, ``weight_norm`` and ``angular_update`` of scale-invariant weights.

    One record per weight tensor: ``group`` is the parameter's name; ``lr`` is its group's.

    Args:
        model: the model whose weights are examined.
        weights: names of the scale-invariant weights; default: found by
            :func:`scale_invariant_weights` (``nn.Sequential`` order, plus a forward pass when
            ``inputs`` is given).
        inputs: example inputs for the detection pass.
        every: record interval in optimizer steps.

    Raises:
        ValueError: for an unknown weight name, no scale-invariant weight found, or bad ``every``.

    Example:
        >>> layer = nn.Sequential(nn.Linear(4, 4, bias=False), nn.LayerNorm(4, elementwise_affine=False))
        >>> EffectiveLR(layer, every=10).weights
        ['0.weight']
    """

    def __init__(
        self,
        model: nn.Module,
        weights: Sequence[str] | None = None,
        *,
        inputs: Any = None,
        every: int = DEFAULT_EVERY,
    ) -> None:
        super().__init__(every)
        named = dict(model.named_parameters())
        if weights is None:
            weights = list(scale_invariant_weights(model, inputs))
            if not weights:
                raise ValueError(
                    "weights must name at least one scale-invariant weight; none was found in the model "
                    "(a Linear/Conv followed by a normalization layer); received weights=None"
                )
        unknown = [w for w in weights if w not in named]
        if unknown:
            raise ValueError(f"weights must be parameter names of the model; received unknown names {unknown}")
        self.weights = list(weights)
        self._params = {name: named[name] for name in self.weights}

    def before_step(self, optimizer, step):
        if self.due(step + 1):
            self._before = {id(p): p.detach().clone() for p in self._params.values()}
        else:
            self._before = None

    def record(self, optimizer, step, epoch):
        lr_of = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
        for name, p in self._params.items():
            if id(p) not in lr_of:
                continue
            lr = lr_of[id(p)]
            before = self._before[id(p)].float().flatten()
            after = p.detach().float().flatten()
            norm2 = float(before @ before)
            cos = float(before @ after) / math.sqrt(max(norm2 * float(after @ after), 1e-300))
            self._add(
                step,
                epoch,
                name,
                lr=lr,
                weight_norm=math.sqrt(norm2),
                effective_lr=lr / norm2 if norm2 > 0 else math.inf,
                angular_update=math.acos(max(-1.0, min(1.0, cos))),
            )


class DeadReLU(Monitor):
    """Record ``dead_fraction`` per ``nn.ReLU`` module on the training batch of each recorded step.

    A unit (last dimension for 2-D activations, dimension 1 — channels — otherwise) is dead on a
    batch when it is zero for every example. Forward hooks are attached only for the forward
    pass of a recorded step (in training mode) and removed right after, so the model runs
    without hooks between records; evaluation passes are ignored.

    Args:
        model: the model whose ``nn.ReLU`` modules are watched.
        every: record interval in optimizer steps.

    Raises:
        ValueError: if the model has no ``nn.ReLU`` module, or bad ``every``.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> _ = torch.nn.init.constant_(model[0].bias[:1], -1e3)  # unit 0 never fires
        >>> mon = DeadReLU(model, every=1)
        >>> mon.arm(); _ = model(torch.randn(8, 3)); mon.after_step(None, 1)
        >>> mon.records[0]["group"], mon.records[0]["dead_fraction"] >= 0.25
        ('1', True)
    """

    def __init__(self, model: nn.Module, *, every: int = DEFAULT_EVERY) -> None:
        super().__init__(every)
        self.modules = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
        if not self.modules:
            raise ValueError(f"model must contain nn.ReLU modules; received a {type(model).__name__} without any")
        self._pending: dict[str, float] = {}
        self._handles: list[Any] = []

    def _hook(self, name: str):
        def hook(module, args, output):
            if module.training and isinstance(output, torch.Tensor) and output.ndim >= 2:
                unit_dim = 1 if output.ndim > 2 else output.ndim - 1
                dims = tuple(d for d in range(output.ndim) if d != unit_dim)
                alive = (output.detach() != 0).any(dim=dims)
                self._pending[name] = 1.0 - float(alive.float().mean())

        return hook

    def arm(self) -> None:
        """Attach the hooks for the next training forward pass (done automatically before recorded steps)."""
        self.remove()
        self._pending = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]

    def remove(self) -> None:
        """Detach the forward hooks from the model."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def on_fit_start(self, state: Any) -> None:
        if self.due(state.step + 1):
            self.arm()

    def on_fit_end(self, state: Any) -> None:
        self.remove()

    def before_step(self, optimizer, step):
        self.remove()  # the forward pass of this step is over

    def after_step(self, optimizer, step, *, epoch=None):
        if self.due(step):
            self.record(optimizer, step, epoch)
        if self.due(step + 1):
            self.arm()

    def record(self, optimizer, step, epoch):
        for name, value in self._pending.items():
            self._add(step, epoch, name, dead_fraction=value)
        self._pending = {}


def default_monitors(model: nn.Module, *, every: int = DEFAULT_EVERY, inputs: Any = None) -> list[Monitor]:
    """Every monitor that applies to ``model``, at one interval (pass the list as ``callbacks``).

    :class:`EffectiveLR` is included when a scale-invariant weight is found, :class:`DeadReLU`
    when the model has ``nn.ReLU`` modules.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [type(m).__name__ for m in default_monitors(model)]
        ['WeightNorm', 'UpdateRatio', 'Bf16LostUpdates', 'Sparsity', 'DeadReLU']
    """
    monitors: list[Monitor] = [WeightNorm(every), UpdateRatio(every), Bf16LostUpdates(every), Sparsity(every)]
    if scale_invariant_weights(model, inputs):
        monitors.append(EffectiveLR(model, inputs=inputs, every=every))
    if any(isinstance(m, nn.ReLU) for m in model.modules()):
        monitors.append(DeadReLU(model, every=every))
    return monitors
