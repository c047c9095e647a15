"""Adapters that bring reglab's components to other training frameworks.

* :mod:`reglab.integrations.lightning` — :class:`~reglab.integrations.lightning.BestWeightsEarlyStopping`,
  a Lightning callback that stops and restores the best weights in memory;
* :mod:`reglab.integrations.transformers` — :class:`~reglab.integrations.transformers.BestWeightsEarlyStopping`,
  a Hugging Face ``TrainerCallback`` with the same semantics, without ``load_best_model_at_end``
  or disk checkpoints.

Each submodule imports its framework on first use; ``import reglab.integrations`` imports neither.
"""

__all__ = ["lightning", "transformers"]


def __getattr__(name: str):
    if name in __all__:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
