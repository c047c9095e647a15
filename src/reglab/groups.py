"""Which parameter gets weight decay, and why: an inspectable plan and optimizer groups.

The policy combines module type, tensor shape, parameter name and the model's own hooks, because
each alone is wrong somewhere: ``ndim >= 2`` decays ViT's 3-D ``pos_embed``; name lists miss
RoBERTa's ``layer_norm`` or a custom ``RMSNorm`` class. Rules, first match wins (the *reason*
recorded for each parameter is the rule that fired):

===  ==========================  =========  ============================================
 #   rule                        decision   fires for
===  ==========================  =========  ============================================
 0   frozen                      left out   ``requires_grad=False`` (in no group at all)
 1   ``decay=`` pattern          decay      a name matching a user pattern
 2   ``no_decay=`` pattern       no decay   a name matching a user pattern
 3   model hook                  no decay   names from ``no_weight_decay()`` /
                                            ``no_weight_decay_keywords()`` of any submodule
 4   normalization module        no decay   every parameter of ``LayerNorm``, ``GroupNorm``,
                                            ``BatchNorm*``, ``InstanceNorm*``, ``RMSNorm``,
                                            ``LocalResponseNorm`` and any class whose name
                                            ends in ``Norm``/``Norm1d/2d/3d``/``Normalization``
 5   bias                        no decay   leaf name ``bias`` or ending in ``_bias``
 6   embedding                   no decay   only with ``decay_embeddings=False``: parameters
                                            of ``nn.Embedding``/``nn.EmbeddingBag`` and leaf
                                            names containing ``embed``
 7   ndim <= 1                   no decay   any other scalar or vector (gains, scales, ...)
 8   default                     decay      everything else (matrices, conv kernels, ...)
===  ==========================  =========  ============================================

Coefficient convention (the same everywhere in reglab): a group's ``weight_decay=λ`` means
decoupled decay ``w ← w − lr·λ·w`` with :func:`reglab.decay.decoupled` or ``torch.optim.AdamW``;
given to a coupled optimizer such as ``torch.optim.SGD`` or ``Adam`` it is the L2 gradient
``λ·w``, i.e. the penalty ``λ/2·Σw²`` (``l2=λ``).

References: the no-decay rules for biases and normalization follow common practice in
Goyal et al., "Accurate, Large Minibatch SGD" (2017) and the BERT/GPT-2 training code; timm's
``param_groups_weight_decay`` and nanoGPT's ``configure_optimizers`` print the same split.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["DecayPlan", "ParamDecision", "decay_plan", "param_groups", "is_norm_module"]

Pattern = str | re.Pattern
Strength = float | Callable[[int], float]

_NORM_TYPES: tuple[type, ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*, Lazy*
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_NORM_NAME = re.compile(r"(norm(\d+d)?|normalization)$", re.IGNORECASE)
_EMBED_TYPES: tuple[type, ...] = (nn.Embedding, nn.EmbeddingBag)


def is_norm_module(module: nn.Module) -> bool:
    """True for torch's normalization layers and any class named like one (``LlamaRMSNorm``).

    Example:
        >>> is_norm_module(nn.LayerNorm(4)), is_norm_module(nn.Linear(2, 2))
        (True, False)
    """
    return isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))


@dataclass(frozen=True)
class ParamDecision:
    """The decision for one parameter.

    Attributes:
        name: qualified name as ``model.named_parameters()`` gives it (first name if tied).
        shape: tensor shape.
        numel: number of elements.
        decay: True if the parameter is in the decayed group.
        reason: the rule that fired, in words (e.g. ``"bias"``, ``"norm module LayerNorm"``).
        trainable: False for frozen parameters, which are in no group.
        lr_mult: learning-rate multiplier for the parameter (1.0 unless ``lr_mult=`` matched).
        module: class name of the module that owns the parameter.
        aliases: other names of the same tensor (tied weights).
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    decay: bool
    reason: str
    trainable: bool = True
    lr_mult: float = 1.0
    module: str = ""
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "numel": self.numel,
            "decay": self.decay,
            "reason": self.reason,
            "trainable": self.trainable,
            "lr_mult": self.lr_mult,
            "module": self.module,
            "aliases": list(self.aliases),
        }


@dataclass
class DecayPlan:
    """Per-parameter weight-decay decisions with their reasons; printable, and the source of groups.

    ``weight_decay=λ`` follows the reglab convention: decoupled ``w ← w − lr·λ·w`` (or, given to a
    coupled optimizer, the L2 penalty ``λ/2·Σw²``).

    Attributes:
        entries: one :class:`ParamDecision` per distinct parameter tensor, frozen ones included,
            in ``named_parameters()`` order.
        weight_decay: the strength given to decayed groups (number or schedule of the step).
        lr: base learning rate when groups carry their own ``lr`` (``None`` otherwise).
        unmatched_hooks: names a model's ``no_weight_decay()`` returned that name no parameter.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        >>> plan = decay_plan(model, weight_decay=0.1)
        >>> plan.decayed_names, plan.no_decay_names
        (['0.weight'], ['0.bias', '1.weight', '1.bias'])
    """

    entries: list[ParamDecision]
    weight_decay: Strength
    lr: float | None = None
    unmatched_hooks: list[str] = field(default_factory=list)
    _params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def decayed_names(self) -> list[str]:
        return [e.name for e in self.entries if e.trainable and e.decay]

    @property
    def no_decay_names(self) -> list[str]:
        return [e.name for e in self.entries if e.trainable and not e.decay]

    @property
    def frozen_names(self) -> list[str]:
        return [e.name for e in self.entries if not e.trainable]

    def params(self, names: Iterable[str]) -> list[torch.Tensor]:
        """The parameter tensors with these names."""
        return [self._params[n] for n in names]

    @property
    def decayed_params(self) -> list[torch.Tensor]:
        return self.params(self.decayed_names)

    def totals(self) -> dict[str, int]:
        """Tensor and element counts: ``decay_tensors``, ``decay_numel``, ``no_decay_*``, ``frozen_*``."""
        out: dict[str, int] = {}
        for key, sel in (
            ("decay", lambda e: e.trainable and e.decay),
            ("no_decay", lambda e: e.trainable and not e.decay),
            ("frozen", lambda e: not e.trainable),
        ):
            chosen = [e for e in self.entries if sel(e)]
            out[f"{key}_tensors"] = len(chosen)
            out[f"{key}_numel"] = sum(e.numel for e in chosen)
        return out

    def groups(self) -> list[dict[str, Any]]:
        """Optimizer groups: one per (decision, lr multiplier), in first-appearance order.

        Each dict has ``params``, ``names``, ``weight_decay`` (λ or 0.0), ``decay`` (bool), and when
        multipliers are in use ``lr_mult`` plus ``lr`` (= base ``lr`` × multiplier).
        """
        buckets: dict[tuple[bool, float], dict[str, Any]] = {}
        use_mult = any(e.lr_mult != 1.0 for e in self.entries if e.trainable)
        for e in self.entries:
            if not e.trainable:
                continue
            key = (e.decay, e.lr_mult)
            if key not in buckets:
                group: dict[str, Any] = {
                    "params": [],
                    "names": [],
                    "weight_decay": self.weight_decay if e.decay else 0.0,
                    "decay": e.decay,
                }
                if use_mult:
                    group["lr_mult"] = e.lr_mult
                    group["lr"] = float(self.lr) * e.lr_mult  # type: ignore[arg-type]
                buckets[key] = group
            buckets[key]["params"].append(self._params[e.name])
            buckets[key]["names"].append(e.name)
        return list(buckets.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for reports and lint)."""
        wd = self.weight_decay if not callable(self.weight_decay) else "schedule"
        return {
            "weight_decay": wd,
            "entries": [e.to_dict() for e in self.entries],
            "totals": self.totals(),
            "unmatched_hooks": list(self.unmatched_hooks),
        }

    def __str__(self) -> str:
        rows = [("name", "shape", "numel", "decay", "reason")]
        for e in self.entries:
            decision = "yes" if e.decay and e.trainable else ("frozen" if not e.trainable else "no")
            reason = e.reason + (f" (lr x{e.lr_mult:g})" if e.lr_mult != 1.0 else "")
            rows.append((e.name, "x".join(map(str, e.shape)) or "scalar", f"{e.numel:,}", decision, reason))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        t = self.totals()
        wd = "schedule" if callable(self.weight_decay) else f"{self.weight_decay:g}"
        lines.append("")
        lines.append(
            f"decayed (weight_decay={wd}): {t['decay_tensors']} tensors, {t['decay_numel']:,} parameters"
        )
        lines.append(f"not decayed: {t['no_decay_tensors']} tensors, {t['no_decay_numel']:,} parameters")
        if t["frozen_tensors"]:
            lines.append(f"frozen (in no group): {t['frozen_tensors']} tensors, {t['frozen_numel']:,} parameters")
        return "\n".join(lines)

    def __repr__(self) -> str:
        t = self.totals()
        return (
            f"DecayPlan(decay={t['decay_tensors']} tensors/{t['decay_numel']} params, "
            f"no_decay={t['no_decay_tensors']}/{t['no_decay_numel']}, frozen={t['frozen_tensors']})"
        )


def check_strength(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0 or a callable of the step."""
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 or a callable of the step; received {name}={value!r}")


def _check_patterns(name: str, patterns: Any) -> tuple[Pattern, ...]:
    if patterns is None:
        return ()
    if isinstance(patterns, (str, re.Pattern)):
        patterns = (patterns,)
    try:
        out = tuple(patterns)
    except TypeError:
        raise ValueError(f"{name} must be a pattern or a sequence of patterns; received {name}={patterns!r}") from None
    for p in out:
        if not isinstance(p, (str, re.Pattern)):
            raise ValueError(
                f"{name} patterns must be fnmatch strings or compiled regexes; received {name}={patterns!r}"
            )
    return out


def _matches(name: str, pattern: Pattern) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _hook_names(model: nn.Module) -> tuple[set[str], set[str]]:
    """Names and keywords from ``no_weight_decay()`` / ``no_weight_decay_keywords()`` of every submodule."""
    names: set[str] = set()
    keywords: set[str] = set()
    for prefix, module in model.named_modules():
        pre = f"{prefix}." if prefix else ""
        for attr, target in (("no_weight_decay", names), ("no_weight_decay_keywords", keywords)):
            fn = getattr(module, attr, None)
            if callable(fn):
                result = fn()
                items = [result] if isinstance(result, str) else list(result or ())
                if target is names:
                    target.update(pre + str(n) for n in items)
                else:
                    target.update(str(k) for k in items)
    return names, keywords


def decay_plan(
    model: nn.Module,
    weight_decay: Strength = 0.0,
    *,
    decay_embeddings: bool = True,
    no_decay: Pattern | Sequence[Pattern] | None = None,
    decay: Pattern | Sequence[Pattern] | None = None,
    lr_mult: Mapping[Pattern, float] | None = None,
    lr: float | None = None,
    use_model_hooks: bool = True,
) -> DecayPlan:
    """Decide, for every parameter of ``model``, whether it is decayed, and record why.

    The rules (first match wins) are listed in the module docstring: frozen parameters are left
    out; user ``decay=`` / ``no_decay=`` patterns; the model's ``no_weight_decay()`` hooks;
    parameters of normalization modules (by type, or by class name for custom ``RMSNorm`` etc.);
    biases; embeddings (only with ``decay_embeddings=False``); other 1-D parameters; all else decays.

    Coefficient convention: ``weight_decay=λ`` is decoupled decay ``w ← w − lr·λ·w`` (AdamW);
    given to a coupled optimizer (``SGD``/``Adam``) it adds the gradient ``λ·w`` (= ``l2=λ``,
    the penalty ``λ/2·Σw²``).

    Args:
        model: the ``nn.Module`` whose parameters are classified (not modified).
        weight_decay: λ for the decayed group, a finite number >= 0 or a callable ``step -> λ``
            (schedules are honoured by :func:`reglab.decay.decoupled` optimizers).
        decay_embeddings: if False, embedding tables and ``*embed*`` parameters are not decayed.
        no_decay: extra name patterns never decayed: ``fnmatch`` strings (``"*.pos_embed"``) or
            compiled ``re.Pattern`` objects (matched in full against the qualified name).
        decay: name patterns always decayed (they win over every other rule).
        lr_mult: ``{pattern: multiplier}``; the first matching pattern sets a parameter's learning
            rate to ``lr * multiplier`` (requires ``lr``).
        lr: base learning rate, needed only with ``lr_mult``.
        use_model_hooks: read ``no_weight_decay()`` / ``no_weight_decay_keywords()`` (timm style).

    Returns:
        A :class:`DecayPlan`; ``str(plan)`` is a table with per-parameter reasons and totals.

    Raises:
        ValueError: ``model`` is not an ``nn.Module``; ``weight_decay`` is negative, NaN or not a
            number; patterns are not strings/regexes; ``lr_mult`` without ``lr`` or with a
            multiplier that is not > 0; the model has no trainable parameter; a trainable
            parameter ends up in no group or in two.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        >>> plan = decay_plan(model, weight_decay=0.05)
        >>> [(e.name, e.decay, e.reason) for e in plan.entries][:2]
        [('0.weight', True, 'default (ndim=2)'), ('0.bias', False, 'bias')]
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; received model={model!r:.80}")
    check_strength("weight_decay", weight_decay)
    no_decay_p = _check_patterns("no_decay", no_decay)
    decay_p = _check_patterns("decay", decay)
    mults: list[tuple[Pattern, float]] = []
    if lr_mult is not None:
        if not isinstance(lr_mult, Mapping):
            raise ValueError(f"lr_mult must be a mapping {{pattern: multiplier}}; received lr_mult={lr_mult!r}")
        for pat, m in lr_mult.items():
            _check_patterns("lr_mult", pat)
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0:
                raise ValueError(f"lr_mult multipliers must be finite numbers > 0; received lr_mult={dict(lr_mult)!r}")
            mults.append((pat, float(m)))
        if mults and lr is None:
            raise ValueError("lr_mult needs the base learning rate; received lr=None (pass lr=...)")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0; received lr={lr!r}")

    # Owners (module, leaf name) and names of every distinct tensor, tied ones included.
    owners: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for leaf, p in module.named_parameters(recurse=False):
            if p is None:
                continue
            full = f"{mod_name}.{leaf}" if mod_name else leaf
            owners.setdefault(id(p), []).append((module, leaf, full))
    hook_names, hook_keywords = _hook_names(model) if use_model_hooks else (set(), set())

    entries: list[ParamDecision] = []
    params: dict[str, torch.Tensor] = {}
    seen_hook: set[str] = set()
    for name, p in model.named_parameters():
        own = owners.get(id(p), [(model, name.rsplit(".", 1)[-1], name)])
        all_names = [full for _, _, full in own]
        aliases = tuple(n for n in dict.fromkeys(all_names) if n != name)
        module_cls = type(own[0][0]).__name__
        mult = 1.0
        for pat, m in mults:
            if any(_matches(n, pat) for n in all_names):
                mult = m
                break
        trainable = p.requires_grad
        if not trainable:
            decision, reason = False, "frozen (requires_grad=False)"
        else:
            decision, reason = _decide(
                p, own, all_names, decay_p, no_decay_p, hook_names, hook_keywords, decay_embeddings, seen_hook
            )
        entries.append(
            ParamDecision(
                name=name,
                shape=tuple(p.shape),
                numel=p.numel(),
                decay=decision,
                reason=reason,
                trainable=trainable,
                lr_mult=mult,
                module=module_cls,
                aliases=aliases,
            )
        )
        params[name] = p
    plan = DecayPlan(
        entries=entries,
        weight_decay=weight_decay,
        lr=lr,
        unmatched_hooks=sorted(hook_names - seen_hook),
        _params=params,
    )
    _verify(model, plan)
    return plan


def _decide(
    p: torch.Tensor,
    own: list[tuple[nn.Module, str, str]],
    all_names: list[str],
    decay_p: tuple[Pattern, ...],
    no_decay_p: tuple[Pattern, ...],
    hook_names: set[str],
    hook_keywords: set[str],
    decay_embeddings: bool,
    seen_hook: set[str],
) -> tuple[bool, str]:
    for pat in decay_p:
        if any(_matches(n, pat) for n in all_names):
            return True, f"decay pattern {_show(pat)}"
    for pat in no_decay_p:
        if any(_matches(n, pat) for n in all_names):
            return False, f"no_decay pattern {_show(pat)}"
    hit = [n for n in all_names if n in hook_names]
    if hit:
        seen_hook.update(hit)
        return False, "model no_weight_decay()"
    for kw in sorted(hook_keywords):
        if any(kw in n for n in all_names):
            return False, f"model no_weight_decay_keywords() {kw!r}"
    for module, _, _ in own:
        if is_norm_module(module):
            return False, f"norm module {type(module).__name__}"
    for _, leaf, _ in own:
        if leaf == "bias" or leaf.endswith("_bias"):
            return False, "bias"
    if not decay_embeddings:
        for module, leaf, _ in own:
            if isinstance(module, _EMBED_TYPES):
                return False, f"embedding ({type(module).__name__})"
            if "embed" in leaf.lower():
                return False, f"embedding (name {leaf!r})"
    if p.ndim <= 1:
        return False, f"ndim={p.ndim}"
    return True, f"default (ndim={p.ndim})"


def _show(pat: Pattern) -> str:
    return f"re:{pat.pattern!r}" if isinstance(pat, re.Pattern) else repr(pat)


def _verify(model: nn.Module, plan: DecayPlan) -> None:
    """Every trainable parameter in exactly one group; raise ``ValueError`` otherwise."""
    counts: dict[int, int] = {}
    for group in plan.groups():
        for p in group["params"]:
            counts[id(p)] = counts.get(id(p), 0) + 1
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"model has no trainable parameter (all {len(plan.entries)} are frozen or it has none); "
            f"received model={type(model).__name__}"
        )
    missing = [n for n, p in trainable if counts.get(id(p), 0) == 0]
    double = [n for n, p in trainable if counts.get(id(p), 0) > 1]
    if missing or double:
        raise ValueError(f"decay plan is inconsistent: in no group {missing}, in two groups {double}")


def param_groups(model: nn.Module, weight_decay: Strength = 0.0, **options: Any) -> list[dict[str, Any]]:
    """Optimizer parameter groups built from :func:`decay_plan` (same arguments).

    Coefficient convention: ``weight_decay=λ`` is decoupled decay ``w ← w − lr·λ·w`` with
    :func:`reglab.decay.decoupled` or ``torch.optim.AdamW``; with a coupled optimizer (``SGD``,
    ``Adam``) the same λ adds the L2 gradient ``λ·w`` (``l2=λ``, penalty ``λ/2·Σw²``).

    Args:
        model: the model whose trainable parameters are grouped.
        weight_decay: λ for decayed parameters (number >= 0, or a schedule ``step -> λ`` which only
            :func:`reglab.decay.decoupled` optimizers understand).
        **options: ``decay_embeddings``, ``no_decay``, ``decay``, ``lr_mult``, ``lr``,
            ``use_model_hooks`` as in :func:`decay_plan`.

    Returns:
        A list of dicts, each with ``params``, ``names``, ``weight_decay``, ``decay`` and (with
        ``lr_mult``) ``lr``/``lr_mult``; any ``torch.optim`` optimizer accepts them. Frozen
        parameters are in no group.

    Raises:
        ValueError: as :func:`decay_plan`.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        >>> groups = param_groups(model, weight_decay=0.1)
        >>> [(g["names"], g["weight_decay"]) for g in groups]
        [(['0.weight'], 0.1), (['0.bias', '1.weight', '1.bias'], 0.0)]
        >>> opt = torch.optim.AdamW(groups, lr=1e-3)
    """
    return decay_plan(model, weight_decay, **options).groups()
