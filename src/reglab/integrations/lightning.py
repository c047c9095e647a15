"""Lightning callback: early stopping that restores the best weights in memory.

Lightning's own ``EarlyStopping`` stops but leaves the model at the *last* epoch's weights; the
usual workaround is a ``ModelCheckpoint`` plus reloading from disk (Lightning issue #1395).
:class:`BestWeightsEarlyStopping` wraps :class:`reglab.EarlyStopping`: on every improvement it
copies ``pl_module.state_dict()`` into CPU buffers, and at the end of ``fit`` it writes them back,
whether training stopped early or ran to ``max_epochs``. Its state (counters, best value, best
weights) goes into Lightning checkpoints through ``state_dict``/``load_state_dict`` and holds only
tensors and plain values, so ``trainer.fit(..., ckpt_path=..., weights_only=True)`` resumes it.

Requires ``lightning`` (``pip install reglab[integrations]``).
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from reglab.stopping import EarlyStopping

__all__ = ["BestWeightsEarlyStopping"]


class BestWeightsEarlyStopping(Callback):
    """Stop on a logged metric and restore the best weights in memory (Lightning).

    The decision is :class:`reglab.EarlyStopping`'s (see its docstring for the exact meaning of
    ``patience``, ``min_delta``, ``baseline`` and ``start_from_epoch``), taken after every
    validation run of ``fit`` (sanity checks excluded), so "epoch" below means "validation run".
    Under DDP the metric is averaged over ranks with ``trainer.strategy.reduce`` before the
    decision, and the decision is then combined with ``reduce_boolean_decision``: every rank stops
    at the same validation run and restores the same weights.

    Args:
        monitor: key of ``trainer.callback_metrics`` (logged with ``self.log``), e.g. ``"val_loss"``.
        mode, patience, min_delta, baseline, start_from_epoch, restore_best, check_finite:
            as in :class:`reglab.EarlyStopping`.

    Raises:
        ValueError: for bad arguments (from :class:`reglab.EarlyStopping`).
        KeyError: during ``fit``, if ``monitor`` is not among the logged metrics.

    Example (with a model, data and trainer of your own)::

            from reglab.integrations.lightning import BestWeightsEarlyStopping
            cb = BestWeightsEarlyStopping(monitor="val_loss", patience=3)
            trainer = pl.Trainer(max_epochs=50, callbacks=[cb])
            trainer.fit(module, train_loader, val_loader)
            cb.stopper.best_epoch, cb.stopper.reason
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int | None = 10,
        min_delta: float = 0.0,
        baseline: float | None = None,
        start_from_epoch: int = 0,
        restore_best: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.stopper = EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=patience,
            min_delta=min_delta,
            baseline=baseline,
            start_from_epoch=start_from_epoch,
            restore_best=restore_best,
            check_finite=check_finite,
            sync="none",  # the Lightning strategy reduces instead (works for every strategy)
        )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.stopper.monitor, mode=self.stopper.mode)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or trainer.fast_dev_run:
            return
        logs = trainer.callback_metrics
        monitor = self.stopper.monitor
        if monitor not in logs:
            raise KeyError(
                f"BestWeightsEarlyStopping monitors {monitor!r}, which was not logged; "
                f"logged metrics are {sorted(logs)}"
            )
        # on the strategy's device: NCCL reduces only accelerator tensors
        value = torch.as_tensor(logs[monitor]).detach().to(trainer.strategy.root_device, torch.float32).reshape(())
        value = trainer.strategy.reduce(value, reduce_op="mean")
        stop = self.stopper.step(float(value), pl_module)
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.should_stop = True
            if self.stopper.reason is None:  # another rank decided: record it here too
                self.stopper.stopped_epoch = self.stopper.epoch

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopper.restore_best:
            self.stopper.restore(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return self.stopper.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.stopper.load_state_dict(state_dict)
