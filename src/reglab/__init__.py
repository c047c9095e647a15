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

# Each area below adds its imports and extends __all__ in its own block.

# --- weight decay engine (groups, penalties, decoupled decay) ---------------------------

# --- stochastic regularizers and soft targets ---------------------------------------------

# --- early stopping, EMA, checkpoints -----------------------------------------------------

# --- diagnosis, monitors, lint ------------------------------------------------------------

# --- sweeps -------------------------------------------------------------------------------
