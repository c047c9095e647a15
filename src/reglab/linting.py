"""A regularization lint: known pitfalls found in a model, its optimizer and its loss.

:func:`lint` inspects torch objects only (parameter groups, module types and modes, the loss's
``label_smoothing``), runs nothing unless ``inputs`` are given, and returns a list of
:class:`Finding` objects, most severe first. Each finding names the rule (``id``), its
``severity`` (``"error"``: the setup is wrong; ``"warning"``: probably not what was meant;
``"info"``: worth knowing), the objects concerned (parameter or module names), the fix, and the
paper or source behind the rule.

========================  ========  ===============================================================
id                        severity  fires when
========================  ========  ===============================================================
decay-on-norm-or-bias     warning   a group with ``weight_decay > 0`` holds biases, parameters of a
                                    normalization layer or other 1-D tensors
coupled-l2-adaptive       warning   ``Adam``/``NAdam``/``RAdam``/``Adamax``/``Adagrad``/``RMSprop``/
                                    ``Adadelta`` with ``weight_decay > 0`` and no decoupling
                                    (``AdamW``, ``decoupled_weight_decay=True``, reglab.decay)
dropout-active-in-eval    error     the model is in eval mode but a dropout module is in training
                                    mode, or (with ``inputs``) two eval passes give different outputs
double-label-smoothing    warning   the loss and the mixup/soft-target object both smooth labels
decay-on-frozen           warning   a group with ``weight_decay > 0`` holds ``requires_grad=False``
                                    parameters
decay-scale-invariant     info      a decayed Linear/Conv weight feeds a normalization layer and its
                                    group carries no ``scale_invariant`` note
dropout-before-batchnorm  warning   a dropout module's output goes straight into a BatchNorm
bf16-decay-lost           warning   bf16/fp16 parameters with ``lr·λ`` below a quarter of the
                                    format's epsilon, so ``w·(1 − lr·λ)`` rounds back to ``w``
no-decay-fine-tuning      info      a fine-tuning run (pretrained checkpoint, PEFT model, or partly
                                    frozen model) whose trainable groups all have ``weight_decay=0``
decay-too-large           error     ``lr·λ ≥ 1``: the step ``w ← w − lr·λ·w`` zeroes or flips weights
========================  ========  ===============================================================

Coefficient convention (reglab's): decoupled ``weight_decay=λ`` does ``w ← w − lr·λ·w``
(``torch.optim.AdamW``, :func:`reglab.decoupled`); in a coupled optimizer (``SGD``, ``Adam``) the
same number is the L2 gradient ``λ·w`` of the penalty ``λ/2·Σw²``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import nn

__all__ = ["Finding", "RULES", "SEVERITIES", "lint"]

SEVERITIES = ("error", "warning", "info")

RULES: dict[str, str] = {
    "decay-on-norm-or-bias": "warning",
    "coupled-l2-adaptive": "warning",
    "dropout-active-in-eval": "error",
    "double-label-smoothing": "warning",
    "decay-on-frozen": "warning",
    "decay-scale-invariant": "info",
    "dropout-before-batchnorm": "warning",
    "bf16-decay-lost": "warning",
    "no-decay-fine-tuning": "info",
    "decay-too-large": "error",
}

_ADAPTIVE = (
    torch.optim.Adam,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adagrad,
    torch.optim.RMSprop,
    torch.optim.Adadelta,
)


@dataclass(frozen=True)
class Finding:
    """One lint result.

    Attributes:
        id: the rule (see the table in this module's docstring).
        severity: ``"error"``, ``"warning"`` or ``"info"``.
        message: what was found, with the numbers.
        objects: names of the parameters or modules concerned.
        fix: what to change.
        reference: the paper or source the rule comes from.
    """

    id: str
    severity: str
    message: str
    objects: tuple[str, ...] = ()
    fix: str = ""
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "message": self.message,
            "objects": list(self.objects),
            "fix": self.fix,
            "reference": self.reference,
        }

    def __str__(self) -> str:
        return f"[{self.severity}] {self.id}: {self.message} Fix: {self.fix}"


def _strength(value: Any) -> float:
    """A group's weight decay as a number (schedules are read at step 0)."""
    if callable(value):
        value = value(0)
    if isinstance(value, torch.Tensor):
        value = value.item()
    return float(value or 0.0)


def _lr(group: Mapping[str, Any]) -> float:
    lr = group.get("lr", 0.0)
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def _is_decoupled(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> bool:
    return (
        isinstance(optimizer, torch.optim.AdamW)
        or bool(group.get("decoupled_weight_decay", False))
        or type(optimizer).__module__.startswith("reglab.")
    )


def _short(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _is_dropout(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.dropout._DropoutNd) or "Dropout" in type(module).__name__


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _smoothing(obj: Any) -> float:
    if obj is None:
        return 0.0
    for attr in ("label_smoothing", "smoothing"):
        value = getattr(obj, attr, None)
        if value is not None:
            return float(value)
    keywords = getattr(obj, "keywords", None)  # functools.partial(F.cross_entropy, label_smoothing=...)
    if isinstance(keywords, Mapping) and "label_smoothing" in keywords:
        return float(keywords["label_smoothing"])
    return 0.0


def _fine_tuning_reason(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    source = getattr(config, "_name_or_path", "") or getattr(config, "name_or_path", "")
    if isinstance(source, str) and source:
        return f"the model was loaded from a pretrained checkpoint ({source!r})"
    if hasattr(model, "peft_config"):
        return "the model is a PEFT model"
    params = list(model.parameters())
    if any(not p.requires_grad for p in params) and any(p.requires_grad for p in params):
        return "part of the model is frozen"
    return None


def lint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Any = None,
    inputs: Any = None,
    *,
    mixup: Any = None,
    fine_tuning: bool | None = None,
) -> list[Finding]:
    """Check a training setup for regularization pitfalls (rules in this module's docstring).

    Nothing is modified. With ``inputs``, the model is run under ``torch.no_grad`` in eval mode
    (every module's mode is restored afterwards, the global RNG state too) to see which module
    feeds which, and whether eval outputs are deterministic.

    Args:
        model: the model.
        optimizer: its optimizer; the group rules need it.
        loss_fn: the training loss (its ``label_smoothing`` attribute, or a ``functools.partial``
            keyword, is read).
        inputs: optional example inputs: a tensor, a tuple of positional inputs or a dict of
            keyword inputs (e.g. a tokenizer's output).
        mixup: an object that mixes or smooths targets (reglab's ``Mixup``/``SoftTargets``,
            timm's ``Mixup``); its ``label_smoothing`` or ``smoothing`` attribute is read.
        fine_tuning: whether this is a fine-tuning run; default: guessed (a ``config`` with a
            checkpoint name, a PEFT model, or a partly frozen model).

    Returns:
        Findings, errors first, then warnings, then info; each rule at most once.

    Raises:
        ValueError: if ``model`` is not an ``nn.Module`` or ``optimizer`` not an Optimizer.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        >>> [(f.severity, f.id) for f in lint(model, opt)]
        [('warning', 'decay-on-norm-or-bias'), ('info', 'decay-scale-invariant')]
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; received model={type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer; received optimizer={type(optimizer).__name__}")
    from reglab.monitors import _call, _is_norm, _sequential_pairs, _traced_pairs, scale_invariant_weights

    findings: list[Finding] = []

    def add(rule: str, message: str, objects: Iterable[str], fix: str, reference: str) -> None:
        findings.append(Finding(rule, RULES[rule], message, tuple(objects), fix, reference))

    names = {id(p): n for n, p in model.named_parameters()}
    owner: dict[int, nn.Module] = {}
    for _, module in model.named_modules():
        for p in module.parameters(recurse=False):
            owner.setdefault(id(p), module)

    def pname(p: torch.Tensor, g: int, i: int) -> str:
        return names.get(id(p), f"<group {g} param {i}>")

    pairs = _sequential_pairs(model)
    traced: list[tuple[str, str]] = []
    if inputs is not None:
        traced = _traced_pairs(model, inputs)
        pairs = list(dict.fromkeys(pairs + traced))

    # -- optimizer rules -------------------------------------------------------------------------
    if optimizer is not None:
        norm_bias: list[str] = []
        frozen: list[str] = []
        coupled_groups: list[int] = []
        too_large: list[str] = []
        bf16_lost: list[str] = []
        bf16_detail = ""
        bf16_safe = bool(getattr(optimizer, "master_weights", False) or getattr(optimizer, "stochastic_rounding", False))
        for g, group in enumerate(optimizer.param_groups):
            wd = _strength(group.get("weight_decay", 0.0))
            if wd <= 0:
                continue
            lr = _lr(group)
            decoupled = _is_decoupled(optimizer, group)
            for i, p in enumerate(group["params"]):
                name = pname(p, g, i)
                leaf = name.rsplit(".", 1)[-1]
                module = owner.get(id(p))
                if leaf == "bias" or leaf.endswith("_bias") or (module is not None and _is_norm(module)) or p.ndim <= 1:
                    norm_bias.append(name)
                if not p.requires_grad:
                    frozen.append(name)
            if isinstance(optimizer, _ADAPTIVE) and not decoupled:
                coupled_groups.append(g)
            elif lr * wd >= 1:
                too_large.append(f"group {g} (lr={lr:g}, weight_decay={wd:g}, lr·λ={lr * wd:g})")
            low = [p for p in group["params"] if p.dtype in (torch.bfloat16, torch.float16)]
            if low and not bf16_safe and lr * wd > 0:
                eps = torch.finfo(low[0].dtype).eps
                if lr * wd < eps / 4:
                    bf16_lost += [pname(p, g, i) for i, p in enumerate(group["params"]) if p.dtype == low[0].dtype]
                    bf16_detail = f"lr·λ = {lr * wd:.3g} < eps/4 = {eps / 4:.3g} for {low[0].dtype}"
        if norm_bias:
            add(
                "decay-on-norm-or-bias",
                f"weight decay is applied to {len(norm_bias)} bias / normalization / 1-D parameter(s): "
                f"{_short(norm_bias)}. Decaying them pulls normalization gains towards 0 and biases "
                "towards 0 without reducing capacity.",
                norm_bias,
                "put them in a group with weight_decay=0: reglab.param_groups(model, weight_decay=λ) "
                "does it and says why for each parameter",
                "Goyal et al., 'Accurate, Large Minibatch SGD' (2017), §5.1; BERT / GPT-2 training code",
            )
        if coupled_groups:
            wds = sorted({_strength(optimizer.param_groups[g].get("weight_decay")) for g in coupled_groups})
            add(
                "coupled-l2-adaptive",
                f"{type(optimizer).__name__}(weight_decay={_short([f'{w:g}' for w in wds])}) adds λ·w to the "
                "gradient, which the adaptive scaling then divides by √v: weights with large gradients are "
                "barely decayed. This is L2 regularization, not weight decay.",
                [f"group {g}" for g in coupled_groups],
                "use torch.optim.AdamW (or reglab.decoupled(torch.optim.Adam)) with the same weight_decay, "
                "or Adam(..., decoupled_weight_decay=True)",
                "Loshchilov & Hutter, 'Decoupled Weight Decay Regularization', ICLR 2019",
            )
        if frozen:
            add(
                "decay-on-frozen",
                f"{len(frozen)} frozen parameter(s) (requires_grad=False) sit in a group with weight_decay > 0: "
                f"{_short(frozen)}. Torch optimizers skip them only while their .grad is None; any decay "
                "applied outside the gradient or a stale gradient shrinks pretrained weights.",
                frozen,
                "build the optimizer from trainable parameters only "
                "([p for p in model.parameters() if p.requires_grad], or reglab.param_groups)",
                "PEFT / LoRA practice: optimize the adapter parameters only (Hu et al., 'LoRA', 2021)",
            )
        if too_large:
            add(
                "decay-too-large",
                f"lr·weight_decay ≥ 1 in {_short(too_large)}: the step w ← w − lr·λ·w sets every weight to "
                "zero or flips its sign.",
                too_large,
                "weight_decay is multiplied by lr (PyTorch's convention): use λ with lr·λ ≪ 1, "
                "typically 1e-4 … 1e-2 per step",
                "PyTorch AdamW documentation (w ← w − γ·λ·w)",
            )
        if bf16_lost:
            add(
                "bf16-decay-lost",
                f"{len(bf16_lost)} low-precision parameter(s) are decayed with {bf16_detail}: "
                "w·(1 − lr·λ) rounds back to w, so the decay never happens.",
                bf16_lost,
                "keep float32 master weights (reglab.decoupled(...)(..., master_weights=True) or autocast with "
                "float32 parameters) or use stochastic rounding",
                "Zamirai et al., 'Revisiting BFloat16 Training' (2020)",
            )
        is_ft = fine_tuning if fine_tuning is not None else _fine_tuning_reason(model) is not None
        trainable = [g for g in optimizer.param_groups if any(p.requires_grad for p in g["params"])]
        if is_ft and trainable and all(_strength(g.get("weight_decay", 0.0)) == 0 for g in trainable):
            why = "fine_tuning=True" if fine_tuning else _fine_tuning_reason(model)
            add(
                "no-decay-fine-tuning",
                f"this looks like fine-tuning ({why}) and no trainable group has weight decay.",
                [f"group {i}" for i, g in enumerate(optimizer.param_groups) if g in trainable],
                "fine-tuning recipes use decoupled weight_decay 0.01–0.1 on weight matrices "
                "(AdamW, no decay on biases / norms)",
                "Devlin et al., 'BERT' (2019): AdamW with weight decay 0.01; Loshchilov & Hutter (2019)",
            )
        # decayed scale-invariant weights
        si = scale_invariant_weights(model, inputs)
        decayed: list[str] = []
        for g, group in enumerate(optimizer.param_groups):
            if _strength(group.get("weight_decay", 0.0)) <= 0 or group.get("scale_invariant"):
                continue
            for i, p in enumerate(group["params"]):
                if pname(p, g, i) in si:
                    decayed.append(pname(p, g, i))
        if decayed:
            add(
                "decay-scale-invariant",
                f"{len(decayed)} decayed weight(s) feed a normalization layer ({_short(decayed)}): the loss does "
                "not change when they are scaled, so weight decay does not limit capacity here; it shrinks "
                "‖w‖ and so raises the effective learning rate lr/‖w‖² (angular update → sqrt(2·lr·λ) for SGD).",
                decayed,
                "keep the decay if intended, but tune it together with lr (it acts as a learning-rate "
                "schedule) and watch reglab.monitors.EffectiveLR; mark the group scale_invariant=True to "
                "acknowledge",
                "van Laarhoven, 'L2 Regularization versus Batch and Weight Normalization' (2017); "
                "Zhang et al., 'Three Mechanisms of Weight Decay Regularization', ICLR 2019",
            )

    # -- model rules -----------------------------------------------------------------------------
    if not model.training:
        active = [n for n, m in model.named_modules() if n and _is_dropout(m) and m.training]
        if active:
            add(
                "dropout-active-in-eval",
                f"the model is in eval mode but {len(active)} dropout module(s) are still in training mode: "
                f"{_short(active)}. Evaluation is noisy and systematically worse.",
                active,
                "call model.eval() last (after any submodule.train()), and use reglab.set_dropout to change rates",
                "Srivastava et al., 'Dropout', JMLR 2014: dropout is off at test time",
            )
    if inputs is not None and not any(f.id == "dropout-active-in-eval" for f in findings):
        modes = {n: m.training for n, m in model.named_modules()}
        try:
            model.eval()
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                first = _first_tensor(_call(model, inputs))
                torch.manual_seed(1)
                second = _first_tensor(_call(model, inputs))
        finally:
            for n, m in model.named_modules():
                m.training = modes[n]
        if first is not None and second is not None and first.is_floating_point() and not torch.equal(first, second):
            add(
                "dropout-active-in-eval",
                "two forward passes in eval mode on the same inputs gave different outputs "
                f"(max difference {float((first - second).abs().max()):.3g}): something stochastic ignores "
                "the module's training flag, e.g. F.dropout(x, p) with its default training=True.",
                [type(model).__name__],
                "pass training=self.training to functional dropout (F.dropout(x, p, self.training)) or use nn.Dropout",
                "Srivastava et al., 'Dropout', JMLR 2014: dropout is off at test time",
            )
    before_bn = sorted(
        {
            f"{a} -> {b}"
            for a, b in pairs
            if _is_dropout(model.get_submodule(a))
            and isinstance(model.get_submodule(b), nn.modules.batchnorm._BatchNorm)
            and getattr(model.get_submodule(a), "p", 1.0) != 0
        }
    )
    if before_bn:
        add(
            "dropout-before-batchnorm",
            f"dropout feeds BatchNorm directly ({_short(before_bn)}): BatchNorm's running variance is "
            "estimated with dropout on and used with it off, so activations shift at test time.",
            before_bn,
            "move dropout after the last BatchNorm (e.g. before the classifier), or use a variance-stable "
            "dropout (Gaussian / 'Uout')",
            "Li et al., 'Understanding the Disharmony between Dropout and Batch Normalization by Variance "
            "Shift', CVPR 2019",
        )

    # -- loss rules ------------------------------------------------------------------------------
    loss_eps, mix_eps = _smoothing(loss_fn), _smoothing(mixup)
    if loss_eps > 0 and mix_eps > 0:
        add(
            "double-label-smoothing",
            f"labels are smoothed twice: by {type(mixup).__name__} (ε={mix_eps:g}) and by the loss "
            f"{type(loss_fn).__name__} (ε={loss_eps:g}); the effective smoothing is about "
            f"{1 - (1 - mix_eps) * (1 - loss_eps):.3g}, not what either says.",
            [type(mixup).__name__, type(loss_fn).__name__],
            "smooth in one place only: set the loss's label_smoothing to 0 when the targets are already soft",
            "Szegedy et al., 'Rethinking the Inception Architecture' (2016); timm's Mixup + SoftTargetCrossEntropy",
        )

    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (order[f.severity], f.id))
