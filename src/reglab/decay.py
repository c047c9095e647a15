"""Decoupled weight decay around any ``torch.optim`` optimizer, with schedules, proximal L1 and
bf16-safe updates.

Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019) show that for adaptive
methods an L2 penalty ``λ/2·Σw²`` (whose gradient ``λ·w`` gets divided by Adam's ``√v``) is not
weight decay; decaying the weights directly, outside the gradient-based update, is. This module
turns any optimizer class into its decoupled-decay version.

Coefficient convention (the same everywhere in reglab):

* decoupled ``weight_decay=λ`` does ``w ← w − lr·λ·w`` at each step, with the group's *current*
  ``lr`` (PyTorch ``AdamW`` convention, so lr schedulers scale the decay too);
* ``lr_independent=True`` gives the paper's variant ``w ← w − (lr_t/lr_0)·λ·w``: the decay follows
  the schedule multiplier ``η_t = lr_t/lr_0`` but not the base learning rate (with a constant lr,
  ``w ← w − λ·w``);
* proximal ``l1=λ`` is the exact proximal step of ``λ·Σ|w|`` with step size ``lr``:
  ``w ← sign(w)·max(|w| − lr·λ, 0)`` (soft-thresholding; produces exact zeros; Beck & Teboulle,
  "A Fast Iterative Shrinkage-Thresholding Algorithm", 2009);
* coupled ``l2=λ`` (see :class:`reglab.penalties.Penalty`) adds ``λ/2·Σw²`` to the loss.

Each step, for each parameter group, in this order: evaluate the closure (if any), decay
``w ← w·(1 − lr·λ)``, run the wrapped optimizer's own step with its coupled ``weight_decay`` set to
zero, then soft-threshold. For plain SGD this equals SGD with coupled ``weight_decay=λ``; for Adam
it equals ``torch.optim.AdamW``. As in ``AdamW``, a parameter without a gradient at a step is not
decayed at that step.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from reglab._bf16 import LOW_PRECISION, stochastic_round_to_bf16
from reglab.groups import check_strength

__all__ = ["decoupled", "decoupled_decay_", "soft_threshold_", "stochastic_round_to_bf16"]

Strength = float | Callable[[int], float]


def decoupled_decay_(params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> None:
    """In place ``w ← w − lr·λ·w`` for every tensor, in one multi-tensor kernel.

    Args:
        params: tensors to decay (modified in place, under ``torch.no_grad``).
        lr: learning rate of the step.
        weight_decay: λ (decoupled convention, PyTorch ``AdamW``).

    Example:
        >>> w = torch.ones(3)
        >>> decoupled_decay_([w], lr=0.1, weight_decay=0.5); w
        tensor([0.9500, 0.9500, 0.9500])
    """
    params = list(params)
    if params and weight_decay != 0:
        with torch.no_grad():
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)


def soft_threshold_(params: Iterable[torch.Tensor], threshold: float) -> None:
    """In place ``w ← sign(w)·max(|w| − threshold, 0)``: the proximal step of ``threshold·Σ|w|``.

    Example:
        >>> w = torch.tensor([-1.0, 0.05, 0.5])
        >>> soft_threshold_([w], 0.1); w
        tensor([-0.9000,  0.0000,  0.4000])
    """
    if threshold <= 0:
        return
    with torch.no_grad():
        for p in params:
            p.copy_(torch.nn.functional.softshrink(p, threshold))


def _value(strength: Strength, step: int) -> float:
    value = strength(step) if callable(strength) else strength
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a strength schedule returned {value!r} at step {step}; it must be finite and >= 0")
    return value


def decoupled(base: type[Optimizer]) -> type[Optimizer]:
    """Return ``base`` with decoupled weight decay (and optional proximal L1 and bf16-safe updates).

    The returned class takes the same arguments as ``base`` plus the keywords below. Each group's
    ``weight_decay`` (a number or a schedule ``step -> λ``) is applied as ``w ← w − lr·λ·w`` with the
    group's current ``lr``, *outside* ``base``'s update; ``base`` itself sees ``weight_decay=0``.
    Groups from :func:`reglab.groups.param_groups` work as they are (no decay on biases/norms).
    The same ``base`` always gives the same class.

    Coefficient convention: decoupled ``weight_decay=λ`` does ``w ← w − lr·λ·w`` (PyTorch AdamW);
    ``lr_independent=True`` does ``w ← w − (lr_t/lr_0)·λ·w`` (Loshchilov & Hutter, Algorithm 2's
    schedule multiplier ``η_t``); ``l1=λ`` soft-thresholds by ``lr·λ`` (proximal step of ``λ·Σ|w|``).

    Keyword arguments of the returned class:
        weight_decay: default λ for groups without their own (number >= 0 or schedule). Default 0.
        l1: default proximal-L1 strength for groups whose ``decay`` key is not False (groups from
            ``param_groups`` that hold biases/norms get 0). Default 0.
        lr_independent: scale the decay by ``lr_t/lr_0`` instead of ``lr_t``.
        master_weights: keep a float32 master copy of every bf16/fp16 parameter; ``base`` updates
            the master (its state is float32 too) and the parameter is the master rounded to
            nearest. No decay or update is lost. Costs 4 bytes per low-precision parameter.
        stochastic_rounding: for bf16 parameters, compute the step in float32 and store the result
            with stochastic rounding (unbiased, no extra memory besides float32 optimizer state).
        seed: seed of the stochastic-rounding generator (saved in ``state_dict``).

    Schedules are called with the number of steps this optimizer has taken (``0`` at the first
    step; kept per group as ``decay_step`` and saved in ``state_dict``).

    Args:
        base: a ``torch.optim.Optimizer`` subclass, e.g. ``torch.optim.Adam`` or ``torch.optim.SGD``.

    Returns:
        The subclass ``Decoupled<Base>``.

    Raises:
        ValueError: ``base`` is not an Optimizer class; at construction, a ``weight_decay`` or ``l1``
            (default or per group) that is negative, NaN or not a number/callable; both
            ``master_weights`` and ``stochastic_rounding``; ``stochastic_rounding`` with float16
            parameters.

    Example:
        >>> from reglab.groups import param_groups
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        >>> opt = decoupled(torch.optim.Adam)(param_groups(model, weight_decay=0.1), lr=1e-3)
        >>> type(opt).__name__, [g["weight_decay"] for g in opt.param_groups]
        ('DecoupledAdam', [0.1, 0.0])
    """
    if not (isinstance(base, type) and issubclass(base, Optimizer)):
        raise ValueError(f"base must be a torch.optim.Optimizer subclass; received base={base!r}")
    return _make_decoupled(base)


@functools.cache
def _make_decoupled(base: type[Optimizer]) -> type[Optimizer]:
    base_takes_wd = "weight_decay" in inspect.signature(base.__init__).parameters

    class Decoupled(base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            params: Any,
            *args: Any,
            weight_decay: Strength = 0.0,
            l1: Strength = 0.0,
            lr_independent: bool = False,
            master_weights: bool = False,
            stochastic_rounding: bool = False,
            seed: int = 0,
            **kwargs: Any,
        ) -> None:
            check_strength("weight_decay", weight_decay)
            check_strength("l1", l1)
            if master_weights and stochastic_rounding:
                raise ValueError(
                    "choose one bf16-safe update: received master_weights=True and stochastic_rounding=True"
                )
            self._reglab_defaults = {"weight_decay": weight_decay, "l1": l1}
            self.lr_independent = bool(lr_independent)  # read by add_param_group during super().__init__
            self.master_weights = bool(master_weights)
            self.stochastic_rounding = bool(stochastic_rounding)
            self._masters: dict[int, torch.Tensor] = {}
            self._generator = torch.Generator().manual_seed(int(seed))
            params = list(params) if not isinstance(params, torch.Tensor) else [params]
            params = [dict(g) if isinstance(g, dict) else g for g in params]  # never mutate the caller's dicts
            if base_takes_wd:
                kwargs["weight_decay"] = 0.0
            super().__init__(params, *args, **kwargs)
            self.defaults["weight_decay"] = weight_decay
            self.defaults["l1"] = l1
            if stochastic_rounding:
                bad = [p.dtype for g in self.param_groups for p in g["params"] if p.dtype == torch.float16]
                if bad:
                    raise ValueError(
                        "stochastic_rounding supports bfloat16 parameters only; received float16 parameters "
                        "(use master_weights=True)"
                    )

        def add_param_group(self, param_group: dict[str, Any]) -> None:
            d = self._reglab_defaults
            param_group.setdefault("weight_decay", d["weight_decay"])
            param_group.setdefault("l1", d["l1"] if param_group.get("decay", True) else 0.0)
            index = len(self.param_groups)
            for key in ("weight_decay", "l1"):
                try:
                    check_strength(key, param_group[key])
                except ValueError as err:
                    raise ValueError(f"{err} (param group {index})") from None
            super().add_param_group(param_group)
            lr = param_group.get("lr")
            if self.lr_independent and not (isinstance(lr, (int, float, torch.Tensor)) and float(lr) > 0):
                raise ValueError(
                    f"lr_independent=True divides by the initial lr, which must be > 0; received lr={lr!r} "
                    f"(param group {index})"
                )
            param_group.setdefault("decay_base_lr", float(lr) if lr is not None else None)
            param_group.setdefault("decay_step", 0)

        def _factor(self, group: dict[str, Any]) -> float:
            lr = group["lr"]
            lr = float(lr.item() if isinstance(lr, torch.Tensor) else lr)
            if self.lr_independent:
                base_lr = group.get("decay_base_lr")
                return lr / base_lr
            return lr

        @torch.no_grad()
        def _to_fp32(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]]:
            swaps = []
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None or p.dtype not in LOW_PRECISION:
                        continue
                    data, grad = p.data, p.grad
                    if self.master_weights:
                        work = self._masters.get(id(p))
                        if work is None:
                            work = data.float()
                            self._masters[id(p)] = work
                    else:
                        work = data.float()
                    p.data = work
                    p.grad = grad.float()
                    swaps.append((p, data, grad, work))
            return swaps

        @torch.no_grad()
        def _from_fp32(self, swaps: list, write: bool = True) -> None:
            for p, data, grad, work in swaps:
                p.data = data
                p.grad = grad
                if not write:
                    continue
                if self.stochastic_rounding and data.dtype == torch.bfloat16:
                    data.copy_(stochastic_round_to_bf16(work, self._generator))
                else:
                    data.copy_(work)

        def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            # every schedule is evaluated (and checked) before anything is modified
            strengths = [
                (_value(g["weight_decay"], g["decay_step"]), _value(g["l1"], g["decay_step"])) for g in self.param_groups
            ]
            swaps = self._to_fp32() if (self.master_weights or self.stochastic_rounding) else []
            done = False
            try:
                with torch.no_grad():
                    for group, (wd, _) in zip(self.param_groups, strengths):
                        if wd:
                            decoupled_decay_([p for p in group["params"] if p.grad is not None], self._factor(group), wd)
                saved: list[Any] = []
                if base_takes_wd:
                    for group in self.param_groups:
                        saved.append(group["weight_decay"])
                        group["weight_decay"] = 0.0
                try:
                    super().step()
                finally:
                    for group, wd in zip(self.param_groups, saved):
                        group["weight_decay"] = wd
                with torch.no_grad():
                    for group, (_, l1) in zip(self.param_groups, strengths):
                        if l1:
                            soft_threshold_([p for p in group["params"] if p.grad is not None], self._factor(group) * l1)
                        group["decay_step"] += 1
                done = True
            finally:
                if swaps:
                    self._from_fp32(swaps, write=done)
            return loss

        def state_dict(self) -> dict[str, Any]:
            sd = super().state_dict()
            for group in sd["param_groups"]:
                for key in ("weight_decay", "l1"):
                    if callable(group.get(key)):
                        group[key] = None  # schedules are code: the constructor's one is kept on load
            index = 0
            masters: dict[int, torch.Tensor] = {}
            for group in self.param_groups:
                for p in group["params"]:
                    if id(p) in self._masters:
                        masters[index] = self._masters[id(p)].clone()
                    index += 1
            sd["reglab"] = {"master_weights": masters, "generator": self._generator.get_state()}
            return sd

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            schedules = [{k: g[k] for k in ("weight_decay", "l1") if callable(g.get(k))} for g in self.param_groups]
            extra = state_dict.get("reglab", {})
            super().load_state_dict({k: v for k, v in state_dict.items() if k != "reglab"})
            for group, sched in zip(self.param_groups, schedules):
                for key in ("weight_decay", "l1"):
                    if group.get(key) is None:
                        if key not in sched:
                            raise ValueError(
                                f"the saved {key} was a schedule; construct the optimizer with the same schedule "
                                f"before loading (received {key}=None)"
                            )
                        group[key] = sched[key]
            flat = [p for group in self.param_groups for p in group["params"]]
            if self.master_weights or self.stochastic_rounding:
                # torch casts loaded state to the parameter dtype; the low-precision modes keep it float32
                for index, saved_state in state_dict.get("state", {}).items():
                    p = flat[int(index)]
                    if p.dtype not in LOW_PRECISION or p not in self.state:
                        continue
                    for key, value in saved_state.items():
                        if key != "step" and isinstance(value, torch.Tensor) and value.is_floating_point():
                            self.state[p][key] = value.detach().to(device=p.device, dtype=torch.float32).clone()
            self._masters = {}
            for index, master in extra.get("master_weights", {}).items():
                p = flat[int(index)]
                self._masters[id(p)] = master.detach().to(device=p.device, dtype=torch.float32).clone()
            if "generator" in extra:
                self._generator.set_state(extra["generator"])

    Decoupled.__name__ = Decoupled.__qualname__ = f"Decoupled{base.__name__}"
    Decoupled.__module__ = __name__
    Decoupled.__doc__ = (
        f"``{base.__module__}.{base.__name__}`` with decoupled weight decay ``w ← w − lr·λ·w`` "
        "(see :func:`reglab.decay.decoupled`)."
    )
    return Decoupled
