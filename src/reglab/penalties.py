"""Coupled L1 / L2 / elastic-net penalties, with a fast path that writes the gradient directly.

Coefficient convention (the same everywhere in reglab): ``l2=λ`` adds ``λ/2·Σw²`` to the loss
(gradient ``λ·w``, the same as ``torch.optim.SGD(weight_decay=λ)``); ``l1=λ`` adds ``λ·Σ|w|``
(subgradient ``λ·sign(w)``, 0 at 0, as autograd gives). Both together are the elastic net
(Zou & Hastie, "Regularization and variable selection via the elastic net", JRSS-B 2005);
L2 is Tikhonov regularization / ridge (Hoerl & Kennard, 1970), L1 the lasso (Tibshirani, 1996).
For decoupled decay ``w ← w − lr·λ·w`` use :func:`reglab.decay.decoupled` instead.

Two ways to apply a :class:`Penalty`:

* ``loss = data_loss + penalty(model)`` then ``backward()``: simple, builds an autograd graph
  over every parameter (the "tutorial way").
* the fast path, ``penalty.add_grad_(model)`` right after ``backward()``: adds the exact gradient
  ``l2·w + l1·sign(w)`` into ``.grad`` with multi-tensor ``torch._foreach_*`` kernels, builds no
  graph and computes the value only when asked. Where to call it:

  - **gradient clipping**: before ``clip_grad_norm_`` (then the clipped gradient is that of
    ``loss + penalty``, as with the tutorial way). ``reglab.fit`` calls
    ``on_after_backward`` before clipping, so ``penalty.callback(model)`` is right there.
  - **torch.amp.GradScaler**: gradients are multiplied by the scale ``S`` until ``unscale_``;
    either call ``add_grad_(model, scale=scaler.get_scale())`` right after
    ``scaler.scale(loss).backward()``, or call ``add_grad_(model)`` after
    ``scaler.unscale_(optimizer)``.
  - **gradient accumulation** over ``k`` micro-batches with ``(loss_i / k).backward()``: call it
    **once**, after the last micro-batch (or with ``scale=1/k`` after each of them).
  - **DDP**: after ``backward()`` (gradients already averaged); parameters are identical on every
    rank, so the added gradient is too.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Iterable

import torch
from torch import nn

from reglab.groups import check_strength, decay_plan

__all__ = ["Penalty", "PenaltyCallback"]

Strength = float | Callable[[int], float]
_PLAN_OPTIONS = {"decay_embeddings", "no_decay", "decay", "use_model_hooks"}


class Penalty:
    """Coupled penalty ``l2/2·Σw² + l1·Σ|w|`` over the decayed parameters of a model.

    Which parameters: by default the decayed ones of :func:`reglab.groups.decay_plan` (biases,
    normalization parameters, other 1-D tensors and frozen parameters excluded); ``params=`` gives
    an explicit list instead, and the ``decay_plan`` options (``no_decay``, ``decay``,
    ``decay_embeddings``, ``use_model_hooks``) adjust the policy. The selection is computed once
    per model and cached (call :meth:`refresh` after freezing or unfreezing parameters).

    Args:
        l1: λ₁ of ``λ₁·Σ|w|``; a finite number >= 0 or a schedule ``step -> λ₁``.
        l2: λ₂ of ``λ₂/2·Σw²`` (gradient ``λ₂·w``); a number >= 0 or a schedule.
        params: explicit tensors to penalize (overrides the policy).
        **plan_options: passed to :func:`reglab.groups.decay_plan`.

    Raises:
        ValueError: a negative, NaN or non-numeric strength; an unknown option; ``params`` holding
            something other than tensors or being empty.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 2))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.fill_(1.0)
        >>> round(Penalty(l2=0.1, l1=0.01)(model).item(), 6)  # 0.1/2·6 + 0.01·6; the bias is not penalized
        0.36
        >>> loss = model(torch.ones(1, 3)).sum()
        >>> loss.backward()
        >>> _ = Penalty(l2=0.1).add_grad_(model)  # .grad += 0.1·w on the weight only

    Reference: Zou & Hastie (2005) for the elastic net; Krogh & Hertz, "A Simple Weight Decay Can
    Improve Generalization" (NeurIPS 1991) for L2 on neural networks.
    """

    def __init__(
        self,
        l1: Strength = 0.0,
        l2: Strength = 0.0,
        *,
        params: Iterable[torch.Tensor] | None = None,
        **plan_options: Any,
    ) -> None:
        check_strength("l1", l1)
        check_strength("l2", l2)
        unknown = sorted(set(plan_options) - _PLAN_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown Penalty option(s) {unknown}; choose from {sorted(_PLAN_OPTIONS)} "
                f"(received {', '.join(f'{k}={plan_options[k]!r}' for k in unknown)})"
            )
        self.l1 = l1
        self.l2 = l2
        self.plan_options = dict(plan_options)
        self._explicit: list[torch.Tensor] | None = None
        if params is not None:
            if isinstance(params, torch.Tensor):
                params = [params]
            explicit = list(params)
            if not explicit or not all(isinstance(p, torch.Tensor) for p in explicit):
                raise ValueError(f"params must be a non-empty iterable of tensors; received params={explicit!r:.120}")
            self._explicit = explicit
        self._cache: tuple[weakref.ref, list[torch.Tensor]] | None = None

    def __repr__(self) -> str:
        def show(v: Strength) -> str:
            return "schedule" if callable(v) else repr(v)

        return f"Penalty(l1={show(self.l1)}, l2={show(self.l2)})"

    # --- selection and strengths --------------------------------------------------------------
    def parameters(self, model: nn.Module | None = None) -> list[torch.Tensor]:
        """The tensors this penalty covers for ``model`` (the explicit ``params`` if given)."""
        if self._explicit is not None:
            return self._explicit
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; received model={model!r:.80}")
        if self._cache is not None and self._cache[0]() is model:
            return self._cache[1]
        params = decay_plan(model, 0.0, **self.plan_options).decayed_params
        self._cache = (weakref.ref(model), params)
        return params

    def refresh(self) -> None:
        """Forget the cached parameter selection (after changing ``requires_grad`` or the model)."""
        self._cache = None

    def strengths(self, step: int | None = None) -> tuple[float, float]:
        """``(l1, l2)`` at ``step``; a schedule needs ``step``.

        Raises:
            ValueError: a strength is a schedule and ``step`` is None, or a schedule returns a
                negative or non-finite value.
        """
        out = []
        for name, value in (("l1", self.l1), ("l2", self.l2)):
            if callable(value):
                if step is None:
                    raise ValueError(f"{name} is a schedule; pass step=... (received step=None)")
                value = float(value(step))
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"the {name} schedule returned {value!r} at step {step}; it must be finite and >= 0")
            out.append(float(value))
        return out[0], out[1]

    # --- value ---------------------------------------------------------------------------------
    def __call__(self, model: nn.Module | None = None, *, step: int | None = None) -> torch.Tensor:
        """The penalty ``l2/2·Σw² + l1·Σ|w|`` as a scalar tensor, differentiable when grad is enabled.

        Args:
            model: the model (may be omitted when ``params`` were given).
            step: the step at which schedules are evaluated.

        Returns:
            A 0-d float32 tensor (on the parameters' device), part of the autograd graph when
            gradients are enabled and the parameters require them.
        """
        params = self.parameters(model)
        l1, l2 = self.strengths(step)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            total = params[0].new_zeros((), dtype=torch.float32)
            if l2:
                total = total + (l2 / 2) * torch.stack([p.float().pow(2).sum() for p in params]).sum()
            if l1:
                total = total + l1 * torch.stack([p.float().abs().sum() for p in params]).sum()
            return total
        return self._value_fast(params, l1, l2)

    value = __call__

    @staticmethod
    @torch.no_grad()
    def _value_fast(params: list[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
        total = params[0].new_zeros((), dtype=torch.float32)
        if l2:
            norms = torch.stack(torch._foreach_norm(params, 2)).float()
            total = total + (l2 / 2) * norms.pow(2).sum()
        if l1:
            total = total + l1 * torch.stack(torch._foreach_norm(params, 1)).float().sum()
        return total

    # --- fast gradient path ----------------------------------------------------------------------
    @torch.no_grad()
    def add_grad_(
        self,
        model: nn.Module | None = None,
        *,
        scale: float = 1.0,
        step: int | None = None,
        return_value: bool = False,
    ) -> torch.Tensor | None:
        """Add ``scale·(l2·w + l1·sign(w))`` into every covered parameter's ``.grad``, in place.

        This is the exact gradient of the penalty value (autograd's subgradient of ``|w|`` at 0 is
        0, as ``sign(0)`` here). Parameters whose ``.grad`` is None get the penalty gradient as their
        gradient. See the module docstring for where to call it with clipping, GradScaler,
        gradient accumulation and DDP.

        Args:
            model: the model (may be omitted when ``params`` were given).
            scale: multiply the added gradient, e.g. ``scaler.get_scale()`` under GradScaler or
                ``1/k`` when called after each of ``k`` accumulation micro-batches.
            step: the step at which schedules are evaluated.
            return_value: also compute and return the (unscaled) penalty value.

        Returns:
            The penalty value when ``return_value`` is True, else None (no value is computed).

        Raises:
            ValueError: ``scale`` is not a finite number; a schedule without ``step``.
        """
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"scale must be a finite number; received scale={scale!r}")
        params = self.parameters(model)
        l1, l2 = self.strengths(step)
        value = self._value_fast(params, l1, l2) if return_value else None
        if scale == 0 or (l1 == 0 and l2 == 0):
            return value
        with_grad = [p for p in params if p.grad is not None]
        grads = [p.grad for p in with_grad]
        for p in params:
            if p.grad is None:
                g = p.detach() * (l2 * scale)
                if l1:
                    g.add_(torch.sign(p.detach()), alpha=l1 * scale)
                p.grad = g
        if grads:
            if l2:
                torch._foreach_add_(grads, with_grad, alpha=l2 * scale)
            if l1:
                torch._foreach_add_(grads, torch._foreach_sign(with_grad), alpha=l1 * scale)
        return value

    def callback(
        self, model: nn.Module, *, scale: float | Callable[[], float] = 1.0, log_value: bool = False
    ) -> PenaltyCallback:
        """A ``reglab.fit`` callback that runs :meth:`add_grad_` in ``on_after_backward``.

        Schedules are evaluated at ``state.step`` (optimizer steps taken before this one).

        Args:
            model: the trained model.
            scale: a number, or a callable returning it each step (e.g. ``scaler.get_scale``).
            log_value: also compute the value and store it in ``state.extra["penalty"]``.

        Example:
            >>> model = nn.Linear(3, 1)
            >>> cb = Penalty(l2=1e-2).callback(model)   # reglab.fit(..., callbacks=[cb])
        """
        self.parameters(model)  # validate the model now
        return PenaltyCallback(self, model, scale=scale, log_value=log_value)


class PenaltyCallback:
    """Adds a :class:`Penalty`'s gradient after ``backward()`` (see :meth:`Penalty.callback`)."""

    def __init__(
        self, penalty: Penalty, model: nn.Module, *, scale: float | Callable[[], float] = 1.0, log_value: bool = False
    ) -> None:
        if not callable(scale) and (
            isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale)
        ):
            raise ValueError(f"scale must be a finite number or a callable; received scale={scale!r}")
        self.penalty = penalty
        self.model = model
        self.scale = scale
        self.log_value = bool(log_value)
        self.last_value: float | None = None

    def on_after_backward(self, state: Any) -> None:
        scale = float(self.scale()) if callable(self.scale) else self.scale
        value = self.penalty.add_grad_(self.model, scale=scale, step=state.step, return_value=self.log_value)
        if value is not None:
            self.last_value = float(value)
            state.extra["penalty"] = self.last_value
