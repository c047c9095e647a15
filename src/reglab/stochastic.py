"""Stochastic regularizers: dropout control, stochastic depth (DropPath) and max-norm.

* :func:`dropout_sites` / :func:`set_dropout` find and set every dropout rate of a model: the
  ``nn.Dropout*`` modules, float rates stored on modules (``nn.MultiheadAttention.dropout``,
  Hugging Face ``attention_dropout`` / ``activation_dropout``), the dropout fields of Hugging Face
  configs and PEFT's ``lora_dropout`` (Srivastava et al., 2014, "Dropout: a simple way to prevent
  neural networks from overfitting", JMLR 15).
* :func:`check_eval_dropout` runs a model twice in ``eval()`` and names the modules that are still
  random (e.g. ``F.scaled_dot_product_attention(dropout_p=...)`` called without checking
  ``self.training``).
* :func:`drop_path` / :class:`DropPath`, :func:`drop_path_rates` and :func:`add_stochastic_depth`
  implement stochastic depth (Huang et al., 2016, "Deep networks with stochastic depth", ECCV),
  in the form used by timm (``timm/layers/drop.py``): the residual branch of each sample is kept
  with probability ``1 - p`` and scaled by ``1 / (1 - p)``, so the expectation is unchanged.
* :class:`MaxNorm` is Srivastava et al.'s max-norm constraint: after each optimizer step the
  incoming weight vector of every output unit is rescaled to an L2 norm of at most ``c``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "CATEGORIES",
    "DropPath",
    "DropoutSite",
    "EvalDropoutReport",
    "MaxNorm",
    "ScheduledDropout",
    "add_stochastic_depth",
    "check_eval_dropout",
    "drop_path",
    "drop_path_rates",
    "dropout_sites",
    "set_dropout",
]

#: The categories a dropout site can belong to (the values accepted by ``where``).
CATEGORIES = ("attention", "ffn", "embeddings", "adapter", "other")


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); received {name}={value!r}")
    return float(value)


# ------------------------------------------------------------------------------------------
# dropout sites
# ------------------------------------------------------------------------------------------


@dataclass
class DropoutSite:
    """One place of a model that holds a dropout rate.

    Attributes:
        name: where it lives: a module path (``"encoder.layers.0.dropout1"``), a float attribute
            of a module (``"encoder.layers.0.self_attn.dropout"``) or a config field
            (``"config.hidden_dropout_prob"``, ``"peft_config.default.lora_dropout"``).
        kind: ``"module"`` (an ``nn.Dropout*``), ``"attribute"`` (a float on a module),
            ``"config"`` (a Hugging Face / PEFT config field) or ``"adapter"`` (a PEFT
            ``lora_dropout`` entry, possibly an ``nn.Identity`` standing for rate 0).
        categories: the parts of the network the rate acts on, a subset of :data:`CATEGORIES`
            (a shared rate such as BERT's ``hidden_dropout_prob`` has several).
        rate: the current rate.
    """

    name: str
    kind: str
    categories: frozenset[str]
    rate: float
    _set: Callable[[float], None] = field(repr=False, compare=False, default=lambda p: None)


_FLOAT_ATTRS = (
    "dropout",
    "dropout_p",
    "dropout_prob",
    "dropout_rate",
    "attention_dropout",
    "attn_dropout",
    "activation_dropout",
    "hidden_dropout",
)

# Hugging Face config fields -> the parts of the network they act on.
_CONFIG_FIELDS: dict[str, frozenset[str]] = {
    "attention_probs_dropout_prob": frozenset({"attention"}),
    "attention_dropout": frozenset({"attention"}),
    "attn_pdrop": frozenset({"attention"}),
    "attn_dropout": frozenset({"attention"}),
    "activation_dropout": frozenset({"ffn"}),
    "hidden_dropout_prob": frozenset({"embeddings", "attention", "ffn", "other"}),
    "hidden_dropout": frozenset({"embeddings", "attention", "ffn"}),
    "dropout": frozenset({"embeddings", "attention", "ffn"}),
    "dropout_rate": frozenset({"embeddings", "attention", "ffn"}),
    "resid_pdrop": frozenset({"attention", "ffn"}),
    "embd_pdrop": frozenset({"embeddings"}),
    "embed_dropout": frozenset({"embeddings"}),
    "classifier_dropout": frozenset({"other"}),
    "summary_first_dropout": frozenset({"other"}),
}

_ATTENTION_WORDS = ("attn", "attention")
_FFN_WORDS = ("mlp", "ffn", "feed_forward", "feedforward", "intermediate", "fc1", "fc2", "activation")
_EMBED_WORDS = ("embed",)


def _is_attention_module(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()


def _categories_for(path: str, owner: nn.Module | None, attr: str | None) -> frozenset[str]:
    """Classify a dropout site from its module path, its owner's type and the attribute name."""
    text = path.lower()
    if "lora" in text:
        return frozenset({"adapter"})
    if isinstance(owner, nn.TransformerEncoderLayer):
        return frozenset({"attention"}) if attr == "dropout1" else frozenset({"ffn"})
    if isinstance(owner, nn.TransformerDecoderLayer):
        return frozenset({"attention"}) if attr in ("dropout1", "dropout2") else frozenset({"ffn"})
    if owner is not None and attr is not None and not isinstance(owner.__dict__.get(attr), nn.Module):
        # a float rate stored on a module
        if attr == "activation_dropout":
            return frozenset({"ffn"})
        if any(w in attr for w in _EMBED_WORDS):
            return frozenset({"embeddings"})
        if _is_attention_module(owner) or any(w in attr for w in _ATTENTION_WORDS):
            return frozenset({"attention"})
        children = [(n.lower(), c) for n, c in owner.named_children()]
        if any(isinstance(c, nn.Embedding) or "embed" in n for n, c in children):
            return frozenset({"embeddings"})
        has_attn = any(_is_attention_module(c) or any(w in n for w in _ATTENTION_WORDS) for n, c in children)
        has_ffn = any(any(w in n for w in _FFN_WORDS) for n, _ in children)
        if has_attn or has_ffn:
            return frozenset({"attention"} if has_attn else set()) | frozenset({"ffn"} if has_ffn else set())
    if any(w in text for w in _EMBED_WORDS):
        return frozenset({"embeddings"})
    if owner is not None and any(isinstance(c, nn.Embedding) for c in owner.children()):
        return frozenset({"embeddings"})  # e.g. GPT-2's ``transformer.drop`` next to ``wte`` / ``wpe``
    if any(w in text for w in _ATTENTION_WORDS):
        return frozenset({"attention"})
    if any(w in text for w in _FFN_WORDS) or ".output." in f".{text}." or text.endswith("output.dropout"):
        return frozenset({"ffn"})
    return frozenset({"other"})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _hf_configs(model: nn.Module) -> list[tuple[str, Any]]:
    """``(path, config)`` for every distinct Hugging Face config reachable from the model's modules."""
    try:
        from transformers import PretrainedConfig
    except ImportError:  # transformers is an optional extra
        return []
    seen: set[int] = set()
    found: list[tuple[str, Any]] = []
    for path, module in model.named_modules():
        config = module.__dict__.get("config")
        if isinstance(config, PretrainedConfig) and id(config) not in seen:
            seen.add(id(config))
            found.append((f"{path}.config" if path else "config", config))
    return found


def _peft_configs(model: nn.Module) -> list[tuple[str, str, Any]]:
    """``(path, adapter_name, config)`` for PEFT adapter configs that carry ``lora_dropout``."""
    seen: set[int] = set()
    found: list[tuple[str, str, Any]] = []
    for path, module in model.named_modules():
        configs = module.__dict__.get("peft_config")
        if not isinstance(configs, Mapping):
            continue
        for adapter, config in configs.items():
            if id(config) in seen or not _is_number(getattr(config, "lora_dropout", None)):
                continue
            seen.add(id(config))
            prefix = f"{path}.peft_config" if path else "peft_config"
            found.append((f"{prefix}.{adapter}", adapter, config))
    return found


def dropout_sites(model: nn.Module) -> list[DropoutSite]:
    """List every dropout site of ``model`` with its current rate, in module order.

    Sites are: ``nn.Dropout*`` modules (all subclasses of ``torch.nn.modules.dropout._DropoutNd``,
    i.e. ``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout``); float rates
    stored on modules under the names ``dropout``, ``dropout_p``, ``attention_dropout``,
    ``activation_dropout`` … (``nn.MultiheadAttention.dropout``, Hugging Face BART/Marian layers);
    PEFT ``lora_dropout`` entries (an ``nn.Identity`` there means rate 0); the dropout fields of
    every Hugging Face config found on a module (``hidden_dropout_prob``,
    ``attention_probs_dropout_prob``, ``attention_dropout``, ``dropout``, …; ``None`` fields are
    skipped) and PEFT adapter configs' ``lora_dropout``.

    Args:
        model: any ``nn.Module``.

    Returns:
        A list of :class:`DropoutSite`.

    Example:
        >>> layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1)
        >>> sorted(s.name for s in dropout_sites(layer))
        ['dropout', 'dropout1', 'dropout2', 'self_attn.dropout']
    """
    from torch.nn.modules.dropout import _DropoutNd

    sites: list[DropoutSite] = []
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleDict) and path.split(".")[-1] == "lora_dropout":
            for adapter, child in module.items():
                if isinstance(child, (_DropoutNd, nn.Identity)):
                    rate = float(child.p) if isinstance(child, _DropoutNd) else 0.0

                    def setter(p: float, _dict=module, _key=adapter) -> None:
                        current = _dict[_key]
                        if isinstance(current, _DropoutNd):
                            current.p = p
                        else:  # PEFT uses nn.Identity for rate 0; a Dropout has no state either
                            _dict[_key] = nn.Dropout(p)

                    sites.append(DropoutSite(f"{path}.{adapter}", "adapter", frozenset({"adapter"}), rate, setter))
            continue
        if isinstance(module, _DropoutNd):
            if ".lora_dropout." in f".{path}":
                continue  # listed with its ModuleDict above
            parent_path, _, attr = path.rpartition(".")
            parent = model.get_submodule(parent_path) if path else None
            cats = _categories_for(path, parent, attr or None)

            def setter(p: float, _m=module) -> None:
                _m.p = p

            sites.append(DropoutSite(path, "module", cats, float(module.p), setter))
            continue
        for attr in _FLOAT_ATTRS:
            value = module.__dict__.get(attr)
            if _is_number(value) and 0.0 <= value <= 1.0:
                name = f"{path}.{attr}" if path else attr
                cats = _categories_for(name, module, attr)

                def setter(p: float, _m=module, _a=attr) -> None:
                    setattr(_m, _a, p)

                sites.append(DropoutSite(name, "attribute", cats, float(value), setter))
    for path, config in _hf_configs(model):
        for fname, cats in _CONFIG_FIELDS.items():
            value = getattr(config, fname, None)
            if _is_number(value):

                def setter(p: float, _c=config, _f=fname) -> None:
                    setattr(_c, _f, p)

                sites.append(DropoutSite(f"{path}.{fname}", "config", cats, float(value), setter))
    for path, _adapter, config in _peft_configs(model):

        def setter(p: float, _c=config) -> None:
            _c.lora_dropout = p

        sites.append(
            DropoutSite(f"{path}.lora_dropout", "config", frozenset({"adapter"}), float(config.lora_dropout), setter)
        )
    return sites


def _parse_where(where: str | Iterable[str] | None) -> frozenset[str]:
    if where is None:
        return frozenset(CATEGORIES)
    chosen = frozenset([where] if isinstance(where, str) else where)
    unknown = sorted(chosen - set(CATEGORIES))
    if unknown or not chosen:
        raise ValueError(f"where must be None or a subset of {list(CATEGORIES)}; received where={where!r}")
    return chosen


def set_dropout(model: nn.Module, p: float, where: str | Iterable[str] | None = None) -> int:
    """Set the rate of every dropout site of ``model`` (optionally only some kinds) to ``p``.

    The model is changed in place: module rates, float attributes, Hugging Face config fields (so
    the change shows in ``model.config`` and persists through ``save_pretrained``) and PEFT
    ``lora_dropout`` (an ``nn.Identity`` that PEFT uses for rate 0 becomes an ``nn.Dropout``;
    neither holds state, so the state_dict keys do not change).

    A site is changed only when **all** the categories it acts on are selected: with
    ``where="attention"``, BERT's attention-probability dropout changes but the shared
    ``hidden_dropout_prob`` (embeddings, attention output and FFN output) does not.

    Args:
        model: any ``nn.Module`` (plain PyTorch, Hugging Face, PEFT).
        p: the new rate, in ``[0, 1)``.
        where: ``None`` for every site, or one or several of ``"attention"``, ``"ffn"``,
            ``"embeddings"``, ``"adapter"``, ``"other"`` (see :func:`dropout_sites`).

    Returns:
        How many sites changed value (sites already at ``p`` are not counted).

    Raises:
        ValueError: if ``p`` is outside ``[0, 1)`` or ``where`` names an unknown category.

    Example:
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True), 2)
        >>> set_dropout(enc, 0.3)
        8
        >>> set_dropout(enc, 0.0, where="attention")
        4
    """
    p = _check_rate("p", p)
    selected = _parse_where(where)
    changed = 0
    for site in dropout_sites(model):
        if site.categories <= selected and site.rate != p:
            site._set(p)
            changed += 1
    return changed


@dataclass
class ScheduledDropout:
    """A :func:`reglab.fit` callback that sets the dropout rate from a schedule of the step.

    ``schedule(step) -> rate`` is called before training (step 0) and after every optimizer step
    (with the number of steps taken so far), and the rate is applied with :func:`set_dropout`.
    Useful for dropout warm-up or "early dropout" (Liu et al., 2023, "Dropout reduces underfitting").

    Args:
        schedule: a callable of the step returning a rate in ``[0, 1)``, or a number.
        where: which sites, as in :func:`set_dropout`.

    Raises:
        ValueError: for an unknown ``where`` or a constant rate outside ``[0, 1)`` (a schedule's
            values are checked when applied).
    """

    schedule: Callable[[int], float] | float
    where: str | Sequence[str] | None = None
    last_rate: float | None = None

    def __post_init__(self) -> None:
        _parse_where(self.where)
        if not callable(self.schedule):
            _check_rate("schedule", self.schedule)

    def rate(self, step: int) -> float:
        value = self.schedule(step) if callable(self.schedule) else self.schedule
        return _check_rate("schedule(step)", value)

    def _apply(self, model: nn.Module, step: int) -> None:
        self.last_rate = self.rate(step)
        set_dropout(model, self.last_rate, self.where)

    def on_fit_start(self, state: Any) -> None:
        self._apply(state.model, state.step)

    def on_step_end(self, state: Any) -> None:
        self._apply(state.model, state.step)

    def state_dict(self) -> dict[str, Any]:
        return {"last_rate": self.last_rate}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_rate = state["last_rate"]


# ------------------------------------------------------------------------------------------
# eval-mode determinism
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalDropoutReport:
    """What :func:`check_eval_dropout` found.

    Attributes:
        ok: the two eval-mode runs gave identical outputs.
        max_abs_diff: largest absolute difference between the two runs' outputs.
        culprits: module paths whose output differed although their inputs were identical (the
            sources of randomness; their parents differ too but are not listed).
    """

    ok: bool
    max_abs_diff: float
    culprits: tuple[str, ...]

    def __str__(self) -> str:
        if self.ok:
            return "eval mode is deterministic: two runs gave identical outputs"
        where = ", ".join(self.culprits) or "no single module (randomness outside module calls)"
        return f"eval mode is random (max |diff| = {self.max_abs_diff:.3g}); sources: {where}"


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    if hasattr(obj, "to_tuple"):  # Hugging Face ModelOutput
        return _tensors(obj.to_tuple())
    return []


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


@torch.no_grad()
def check_eval_dropout(model: nn.Module, inputs: Any) -> EvalDropoutReport:
    """Run ``model`` twice in ``eval()`` on the same inputs and report any randomness left on.

    Dropout must be off in eval mode, but functional calls such as
    ``F.dropout(x, p)`` (``training`` defaults to True) or
    ``F.scaled_dot_product_attention(q, k, v, dropout_p=self.p)`` without a ``self.training``
    check stay random. Every module's inputs and outputs are recorded with forward hooks, so the
    report names the innermost modules that produced different outputs from identical inputs
    (this keeps a copy of every activation of both runs: use a small batch).
    The global RNG is not reseeded between the runs (so random ops draw different numbers), the
    model's train/eval mode is restored afterwards and no gradient is recorded.

    Args:
        model: the model to check.
        inputs: a tensor, a tuple of positional arguments or a dict of keyword arguments.

    Returns:
        An :class:`EvalDropoutReport` (``report.ok`` is ``True`` when deterministic).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        >>> check_eval_dropout(net, torch.randn(2, 4)).ok
        True
    """
    records: list[dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]] = [{}, {}]
    run = [0]
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        name = names.get(id(module), "?")
        inp = [t.detach().clone() for t in _tensors((args, kwargs))]
        out = [t.detach().clone() for t in _tensors(output)]
        records[run[0]].setdefault(name, (inp, out))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        outputs = []
        for i in range(2):
            run[0] = i
            if isinstance(inputs, Mapping):
                out = model(**inputs)
            elif isinstance(inputs, tuple):
                out = model(*inputs)
            else:
                out = model(inputs)
            outputs.append([t.detach().clone() for t in _tensors(out)])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    diff = 0.0
    for a, b in zip(*outputs):
        if a.shape != b.shape:
            diff = float("inf")
        elif a.numel():
            diff = max(diff, float((a.double() - b.double()).abs().max()))
    ok = _same(outputs[0], outputs[1])
    culprits: list[str] = []
    if not ok:
        for name, (inp0, out0) in records[0].items():
            inp1, out1 = records[1].get(name, ([], []))
            if _same(inp0, inp1) and not _same(out0, out1):
                culprits.append(name)
        # keep the innermost sources: drop a module whose descendant is already a culprit
        culprits = [
            c for c in culprits if not any(o != c and (c == "" or o.startswith(c + ".")) for o in culprits)
        ]
    return EvalDropoutReport(ok=ok, max_abs_diff=diff, culprits=tuple(culprits))


# ------------------------------------------------------------------------------------------
# stochastic depth
# ------------------------------------------------------------------------------------------


def drop_path(
    x: torch.Tensor,
    p: float,
    training: bool,
    *,
    batch_dim: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Drop whole samples of a residual branch: ``x · b / (1 - p)`` with ``b ~ Bernoulli(1 - p)`` per sample.

    Stochastic depth (Huang et al., 2016) as written in timm's ``drop_path``: applied to the output
    of a residual branch, ``y = x + drop_path(f(x), p, training)`` skips the branch for a fraction
    ``p`` of the samples and scales the kept ones by ``1/(1-p)`` so that ``E[y]`` is unchanged.
    Identity when ``training`` is false or ``p == 0``.

    Args:
        x: the branch output; one Bernoulli draw per index of ``batch_dim``.
        p: drop probability in ``[0, 1)``.
        training: apply only when true.
        batch_dim: the batch dimension (1 for sequence-first ``(S, N, E)`` layouts).
        generator: source of randomness (default: the global generator).

    Returns:
        A tensor like ``x`` (``x`` itself when inactive).

    Raises:
        ValueError: if ``p`` is outside ``[0, 1)``.

    Example:
        >>> x = torch.ones(4, 3)
        >>> drop_path(x, 0.5, training=False) is x
        True
    """
    p = _check_rate("p", p)
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    shape = [1] * x.ndim
    shape[batch_dim] = x.shape[batch_dim]
    mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep, generator=generator)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; follows the module's ``train()`` / ``eval()`` mode.

    A ``DropPath(0.0)`` stays a ``DropPath`` (an identity), so models built at every rate of a
    sweep have the same structure and state_dict keys; the module has no parameters or buffers.

    Args:
        p: drop probability in ``[0, 1)``; may be changed later through ``.p``.
        batch_dim: the batch dimension of the input.
        generator: optional source of randomness for reproducible masks.

    Raises:
        ValueError: if ``p`` is outside ``[0, 1)``.

    Example:
        >>> dp = DropPath(0.2)
        >>> dp
        DropPath(p=0.2)
    """

    def __init__(self, p: float = 0.0, *, batch_dim: int = 0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = _check_rate("p", p)
        self.batch_dim = batch_dim
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training, batch_dim=self.batch_dim, generator=self.generator)

    def extra_repr(self) -> str:
        extra = f", batch_dim={self.batch_dim}" if self.batch_dim else ""
        return f"p={self.p:g}{extra}"


def drop_path_rates(num_blocks: int, max_rate: float, rule: str = "linear") -> list[float]:
    """Per-block drop rates for stochastic depth.

    ``rule="linear"`` is Huang et al.'s linear decay of the survival probability: block
    ``l = 1..L`` gets ``p_l = l/L · p_L`` (the first block is dropped with ``p_L/L``, the last with
    ``p_L``). timm's ``torch.linspace(0, p_L, L)`` is the same rule shifted so that the first
    block gets 0. ``rule="uniform"`` gives every block ``p_L``.

    Args:
        num_blocks: ``L >= 1``.
        max_rate: ``p_L`` in ``[0, 1)``.
        rule: ``"linear"`` or ``"uniform"``.

    Returns:
        A list of ``L`` floats.

    Raises:
        ValueError: for ``num_blocks < 1``, ``max_rate`` outside ``[0, 1)`` or an unknown rule.

    Example:
        >>> drop_path_rates(4, 0.2)
        [0.05, 0.1, 0.15, 0.2]
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be an int >= 1; received num_blocks={num_blocks!r}")
    max_rate = _check_rate("max_rate", max_rate)
    if rule == "linear":
        return [round(max_rate * (i + 1) / num_blocks, 12) for i in range(num_blocks)]
    if rule == "uniform":
        return [max_rate] * num_blocks
    raise ValueError(f"rule must be 'linear' or 'uniform'; received rule={rule!r}")


_HOOK_ATTR = "_reglab_drop_path"


def _apply_drop_path_hook(module: nn.Module, args: Any, output: Any) -> Any:
    dp = getattr(module, _HOOK_ATTR)
    if isinstance(output, torch.Tensor):
        return dp(output)
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (dp(output[0]), *output[1:])
    raise TypeError(
        f"stochastic depth needs the branch to return a tensor or a tuple starting with one; "
        f"{type(module).__name__} returned {type(output).__name__}"
    )


def add_stochastic_depth(
    model: nn.Module,
    max_rate: float,
    blocks: str | Sequence[str],
    *,
    rule: str = "linear",
    batch_dim: int = 0,
    generator: torch.Generator | None = None,
) -> list[DropPath]:
    """Wrap the residual branches of ``model`` with :class:`DropPath` at rates from :func:`drop_path_rates`.

    A residual block computes ``x + f(x)``; give the paths of the modules ``f`` (one per block, in
    depth order, or a glob pattern over module paths such as ``"layers.*.mlp"``, matched in
    module order). Each branch's output then goes through a ``DropPath``:

    * an ``nn.Sequential`` branch gets the ``DropPath`` appended as its last layer;
    * any other module gets it as a child named ``drop_path`` applied by a forward hook (to the
      output tensor, or the first element of a tuple output).

    ``DropPath`` has no parameters or buffers, so the state_dict keys do not change, and the
    modules follow ``train()`` / ``eval()``. Calling the function again on the same branches
    updates the rates instead of stacking a second ``DropPath``; ``max_rate=0`` still inserts the
    modules (at rate 0). For ``nn.TransformerEncoderLayer`` the branch ends are ``dropout1``
    (attention) and ``dropout2`` (FFN); use ``batch_dim=1`` unless ``batch_first=True``.

    Args:
        model: the model, changed in place.
        max_rate: the rate of the deepest block, in ``[0, 1)``.
        blocks: module paths of the residual branches in depth order, or a glob pattern.
        rule: rate rule of :func:`drop_path_rates`.
        batch_dim: batch dimension of the branch outputs.
        generator: optional shared source of randomness.

    Returns:
        The ``DropPath`` modules, one per branch, in depth order.

    Raises:
        ValueError: for a bad rate or rule, an empty selection, an unknown path, or a branch that
            is a container without ``forward`` (``ModuleList`` / ``ModuleDict``).

    Example:
        >>> net = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4)) for _ in range(3)])
        >>> [dp.p for dp in add_stochastic_depth(net, 0.3, ["0", "1", "2"])]
        [0.1, 0.2, 0.3]
    """
    max_rate = _check_rate("max_rate", max_rate)
    modules = dict(model.named_modules())
    if isinstance(blocks, str):
        names = [n for n in modules if n and fnmatch.fnmatchcase(n, blocks)]
    else:
        names = list(blocks)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(f"blocks must name modules of the model; unknown paths {unknown} in blocks={blocks!r}")
    if not names:
        raise ValueError(f"blocks must select at least one module; received blocks={blocks!r}")
    rates = drop_path_rates(len(names), max_rate, rule)
    result: list[DropPath] = []
    for name, rate in zip(names, rates):
        branch = modules[name]
        if isinstance(branch, (nn.ModuleList, nn.ModuleDict)):
            raise ValueError(f"blocks must name callable branches; {name!r} is a {type(branch).__name__}")
        if isinstance(branch, nn.Sequential):
            last = branch[-1] if len(branch) else None
            if isinstance(last, DropPath):
                dp = last
            else:
                dp = DropPath(rate, batch_dim=batch_dim, generator=generator)
                branch.append(dp)
        elif isinstance(getattr(branch, _HOOK_ATTR, None), DropPath):
            dp = getattr(branch, _HOOK_ATTR)
        else:
            dp = DropPath(rate, batch_dim=batch_dim, generator=generator)
            branch.add_module("drop_path" if "drop_path" not in branch._modules else "reglab_drop_path", dp)
            object.__setattr__(branch, _HOOK_ATTR, dp)
            branch.register_forward_hook(_apply_drop_path_hook)
        dp.p = rate
        dp.batch_dim = batch_dim
        result.append(dp)
    return result


# ------------------------------------------------------------------------------------------
# max-norm
# ------------------------------------------------------------------------------------------

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class MaxNorm:
    """Max-norm constraint (Srivastava et al., 2014, section 5.1): ``‖w_j‖₂ ≤ c`` per output unit.

    After each optimizer step the incoming weight vector of every output unit whose L2 norm
    exceeds ``c`` is rescaled onto the ball of radius ``c`` (``torch.Tensor.renorm_``); the others
    are left unchanged. Output units are the rows of an ``nn.Linear`` weight ``(out, in)``, the
    output channels of a convolution (``weight[j]`` of shape ``(in/groups, *kernel)``) and
    ``weight[:, j]`` of a transposed convolution. Biases are never constrained.

    Use it as a :func:`reglab.fit` callback (``on_step_end``), or call it directly after
    ``optimizer.step()``: ``MaxNorm(3.0)(model)`` or ``MaxNorm(3.0).apply(model)``.

    Args:
        c: the maximum norm, > 0 (Srivastava et al. use 3 to 4).
        modules: module paths to constrain; default every ``Linear`` / ``Conv*`` /
            ``ConvTranspose*`` module.

    Raises:
        ValueError: if ``c`` is not a positive finite number or ``modules`` is empty.

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight.fill_(10.0)
        >>> MaxNorm(1.0)(lin)
        2
        >>> round(float(lin.weight.detach().norm(dim=1).max()), 4)
        1.0
    """

    def __init__(self, c: float, *, modules: Sequence[str] | None = None) -> None:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < float("inf"):
            raise ValueError(f"c must be a finite number > 0; received c={c!r}")
        if modules is not None and (isinstance(modules, str) or len(modules) == 0):
            raise ValueError(f"modules must be None or a non-empty sequence of paths; received modules={modules!r}")
        self.c = float(c)
        self.modules = None if modules is None else list(modules)

    def _targets(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        if self.modules is None:
            return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, *_CONV, *_CONV_T))]
        return [(n, model.get_submodule(n)) for n in self.modules]

    @torch.no_grad()
    def apply(self, model: nn.Module) -> int:
        """Constrain the weights in place; return how many output units were rescaled."""
        clipped = 0
        for name, module in self._targets(model):
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor) or weight.ndim < 2:
                raise ValueError(f"modules must have a weight of 2 or more dims; {name!r} has none")
            dim = 1 if isinstance(module, _CONV_T) else 0
            norms = weight.transpose(0, dim).flatten(1).norm(dim=1)
            clipped += int((norms > self.c).sum())
            weight.renorm_(2, dim, self.c)
        return clipped

    __call__ = apply

    def on_step_end(self, state: Any) -> None:
        self.apply(state.model)

    def state_dict(self) -> dict[str, Any]:
        return {"c": self.c, "modules": self.modules}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.c = float(state["c"])
        self.modules = None if state.get("modules") is None else list(state["modules"])

    def __repr__(self) -> str:
        return f"MaxNorm(c={self.c:g})"
