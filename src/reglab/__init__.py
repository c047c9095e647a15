"""reglab: regularize neural-network training and measure generalization, on PyTorch.

Coefficient conventions, the same everywhere in the library:

* ``l2=λ`` adds ``λ/2·Σw²`` to the loss (gradient ``λ·w``, as ``torch.optim.SGD(weight_decay=λ)``);
* ``l1=λ`` adds ``λ·Σ|w|``;
* decoupled ``weight_decay=λ`` does ``w ← w − lr·λ·w`` (PyTorch AdamW convention).

Every name users may rely on is listed in ``__all__``; modules whose names start with an
underscore are private.
"""

from __future__ import annotations

__version__ = "0.1.0"

# --- foundation: data and reference loop -------------------------------------------------
from reglab.data import (
    DigitsData,
    RegressionData,
    Split,
    TensorLoader,
    flip_labels,
    load_digits,
    make_high_dim_regression,
    make_polynomial,
)
from reglab.loop import Callback, History, LoopState, LRScheduler, evaluate, fit

__all__ = [
    "__version__",
    "Callback",
    "DigitsData",
    "History",
    "LRScheduler",
    "LoopState",
    "Split",
    "TensorLoader",
    "evaluate",
    "fit",
    "flip_labels",
    "load_digits",
    "make_high_dim_regression",
    "make_polynomial",
    "RegressionData",
]

# The components are imported on first use (PEP 562), so ``import reglab`` stays light and each
# area lists its public names in its own block: ``name -> (module, attribute)``; an attribute of
# ``None`` exposes the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {}

# --- weight decay engine (groups, penalties, decoupled decay) ---------------------------
_LAZY.update(
    {
        "DecayPlan": ("reglab.groups", "DecayPlan"),
        "decay_plan": ("reglab.groups", "decay_plan"),
        "param_groups": ("reglab.groups", "param_groups"),
        "Penalty": ("reglab.penalties", "Penalty"),
        "decoupled": ("reglab.decay", "decoupled"),
    }
)

# --- stochastic regularizers and soft targets ---------------------------------------------
_LAZY.update(
    {
        "set_dropout": ("reglab.stochastic", "set_dropout"),
        "dropout_sites": ("reglab.stochastic", "dropout_sites"),
        "check_eval_dropout": ("reglab.stochastic", "check_eval_dropout"),
        "DropPath": ("reglab.stochastic", "DropPath"),
        "drop_path": ("reglab.stochastic", "drop_path"),
        "drop_path_rates": ("reglab.stochastic", "drop_path_rates"),
        "add_stochastic_depth": ("reglab.stochastic", "add_stochastic_depth"),
        "MaxNorm": ("reglab.stochastic", "MaxNorm"),
        "ScheduledDropout": ("reglab.stochastic", "ScheduledDropout"),
        "smooth_labels": ("reglab.targets", "smooth_labels"),
        "soft_target_cross_entropy": ("reglab.targets", "soft_target_cross_entropy"),
        "SoftTargetCrossEntropy": ("reglab.targets", "SoftTargetCrossEntropy"),
        "SoftTargets": ("reglab.targets", "SoftTargets"),
        "Mixup": ("reglab.targets", "Mixup"),
        "CutMix": ("reglab.targets", "CutMix"),
        "augment": ("reglab.augment", None),
    }
)

# --- early stopping, EMA, checkpoints -----------------------------------------------------
_LAZY.update(
    {
        "EarlyStopping": ("reglab.stopping", "EarlyStopping"),
        "EMA": ("reglab.stopping", "EMA"),
        "StopReason": ("reglab.stopping", "StopReason"),
        "checkpoint": ("reglab.checkpoint", None),
        "Checkpointer": ("reglab.checkpoint", "Checkpointer"),
        "integrations": ("reglab.integrations", None),
    }
)

# --- diagnosis, monitors, lint ------------------------------------------------------------
_LAZY.update(
    {
        "diagnose": ("reglab.diagnosis", "diagnose"),
        "Diagnosis": ("reglab.diagnosis", "Diagnosis"),
        "monitors": ("reglab.monitors", None),
        "lint": ("reglab.linting", "lint"),
        "Finding": ("reglab.linting", "Finding"),
    }
)

# --- sweeps -------------------------------------------------------------------------------
_LAZY.update(
    {
        "sweep": ("reglab.sweep", None),
        "load_sweep": ("reglab.sweep", "load_sweep"),
        "SweepResult": ("reglab.sweep", "SweepResult"),
        "ParamSpec": ("reglab.sweep", "ParamSpec"),
        "BatchedPath": ("reglab.batched", "BatchedPath"),
        "RateDropout": ("reglab.batched", "RateDropout"),
    }
)

# --- reproductions ------------------------------------------------------------------------
_LAZY.update(
    {
        "run_repro": ("reglab.recipes._repro", "run_repro"),
        "available_repros": ("reglab.recipes._repro", "available"),
    }
)

__all__ += sorted(_LAZY)


def __getattr__(name: str):
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'reglab' has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
