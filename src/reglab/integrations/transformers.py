"""Hugging Face ``TrainerCallback``: early stopping that restores the best weights in memory.

The ``transformers`` ``EarlyStoppingCallback`` needs ``load_best_model_at_end=True``,
``metric_for_best_model`` and a save strategy that writes checkpoints to disk, from which the
best model is reloaded. :class:`BestWeightsEarlyStopping` keeps the best weights in CPU memory
instead (no disk checkpoint, works with ``save_strategy="no"``) and writes them back into the
model in ``on_train_end``, with the decision semantics of :class:`reglab.EarlyStopping`.

The ``Trainer`` gathers evaluation results from all processes before computing metrics, so every
rank sees the same ``eval_loss`` and takes the same decision.

Requires ``transformers`` (``pip install reglab[integrations]``).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from reglab.stopping import EarlyStopping

__all__ = ["BestWeightsEarlyStopping"]


class BestWeightsEarlyStopping(TrainerCallback):
    """Stop on an evaluation metric and restore the best weights in memory (HF ``Trainer``).

    Decides after each evaluation (``eval_strategy="steps"`` or ``"epoch"``), so "epoch" in
    :class:`reglab.EarlyStopping`'s docstring means "evaluation" here.

    Args:
        monitor: key of the evaluation metrics; ``"eval_"`` is prefixed when missing
            (``"loss"`` and ``"eval_loss"`` are the same).
        mode, patience, min_delta, baseline, start_from_epoch, restore_best, check_finite:
            as in :class:`reglab.EarlyStopping`.

    Raises:
        ValueError: for bad arguments; at ``on_train_begin`` if ``args.eval_strategy`` is ``"no"``.
        KeyError: at an evaluation that lacks ``monitor``.

    Example (with a model, data and trainer of your own)::

            from reglab.integrations.transformers import BestWeightsEarlyStopping
            cb = BestWeightsEarlyStopping(monitor="eval_loss", patience=3)
            trainer = Trainer(model, args, train_dataset=tr, eval_dataset=ev, callbacks=[cb])
            trainer.train()   # stops early; trainer.model now holds the best evaluation's weights
    """

    def __init__(
        self,
        monitor: str = "eval_loss",
        mode: str = "min",
        patience: int | None = 10,
        min_delta: float = 0.0,
        baseline: float | None = None,
        start_from_epoch: int = 0,
        restore_best: bool = True,
        check_finite: bool = True,
    ) -> None:
        if isinstance(monitor, str) and monitor and not monitor.startswith("eval_"):
            monitor = f"eval_{monitor}"
        self.stopper = EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=patience,
            min_delta=min_delta,
            baseline=baseline,
            start_from_epoch=start_from_epoch,
            restore_best=restore_best,
            check_finite=check_finite,
            sync="none",  # the Trainer already gathers evaluation over processes
        )

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
            raise ValueError(
                "BestWeightsEarlyStopping needs evaluations during training; "
                f"received eval_strategy={str(getattr(args.eval_strategy, 'value', args.eval_strategy))!r} "
                "(use 'steps' or 'epoch')"
            )

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        metrics = metrics or {}
        monitor = self.stopper.monitor
        if monitor not in metrics:
            raise KeyError(f"BestWeightsEarlyStopping monitors {monitor!r}; evaluation returned {sorted(metrics)}")
        if self.stopper.step(metrics[monitor], kwargs.get("model")):
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        if self.stopper.restore_best and model is not None:
            self.stopper.restore(model)

    def state_dict(self) -> dict[str, Any]:
        return self.stopper.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stopper.load_state_dict(state)
