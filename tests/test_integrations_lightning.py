import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning.pytorch as pl
from reglab.integrations.lightning import BestWeightsEarlyStopping
from reglab.stopping import StopReason

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated.*"),
]


class Regressor(pl.LightningModule):
    """w starts at 0 and is trained towards 2; validation targets use w = 1, so the validation loss
    falls, reaches its minimum on the way, then rises: a clean overfitting curve."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1, bias=False)
        nn.init.zeros_(self.net.weight)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.02)


def _loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    vx = torch.randn(32, 4, generator=g)
    train = DataLoader(TensorDataset(x, x @ torch.full((4, 1), 2.0)), batch_size=16)
    val = DataLoader(TensorDataset(vx, vx @ torch.full((4, 1), 1.0)), batch_size=32)
    return train, val


class WeightSpy(pl.Callback):
    def __init__(self):
        self.weights = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.weights.append(pl_module.net.weight.detach().clone())


def _trainer(max_epochs, callbacks, **kwargs):
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(max_epochs=max_epochs, callbacks=callbacks, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def test_stops_and_restores_best_weights_in_memory():
    module, spy = Regressor(), WeightSpy()
    cb = BestWeightsEarlyStopping(monitor="val_loss", patience=2)
    trainer = _trainer(40, [cb, spy])
    trainer.fit(module, *_loaders())
    s = cb.stopper
    assert s.reason is StopReason.PATIENCE
    assert len(spy.weights) == s.stopped_epoch == s.best_epoch + 2 < 40
    assert trainer.current_epoch < 40 and trainer.should_stop
    assert 3 <= s.best_epoch  # the curve first improves, then gets worse
    # the module holds the best validation run's weights, not the last ones
    assert torch.equal(module.net.weight, spy.weights[s.best_epoch - 1])
    assert not torch.equal(module.net.weight, spy.weights[-1])


def test_restores_best_also_without_early_stop():
    module, spy = Regressor(), WeightSpy()
    cb = BestWeightsEarlyStopping(monitor="val_loss", patience=None)
    _trainer(12, [cb, spy]).fit(module, *_loaders())
    assert cb.stopper.reason is None and len(spy.weights) == 12
    assert torch.equal(module.net.weight, spy.weights[cb.stopper.best_epoch - 1])


@pytest.mark.filterwarnings("ignore:.*callbacks used to create the checkpoint.*")
def test_resume_through_lightning_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    full = BestWeightsEarlyStopping(patience=30)
    module_full = Regressor()
    _trainer(8, [full]).fit(module_full, *_loaders())

    first = BestWeightsEarlyStopping(patience=30)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer(4, [first, ckpt], enable_checkpointing=True).fit(Regressor(), *_loaders())
    resumed = BestWeightsEarlyStopping(patience=30)
    module = Regressor()
    _trainer(8, [resumed]).fit(module, *_loaders(), ckpt_path=tmp_path / "last.ckpt", weights_only=True)

    a, b = full.stopper, resumed.stopper
    assert (b.epoch, b.best, b.best_epoch, b.wait) == (a.epoch, a.best, a.best_epoch, a.wait) and a.epoch == 8
    assert torch.equal(b.best_state["net.weight"], a.best_state["net.weight"])
    assert torch.equal(module.net.weight, module_full.net.weight)


def test_missing_metric_is_a_clear_error():
    cb = BestWeightsEarlyStopping(monitor="val_acc")
    with pytest.raises(KeyError, match="val_acc.*val_loss"):
        _trainer(2, [cb]).fit(Regressor(), *_loaders())


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="patience=0"):
        BestWeightsEarlyStopping(patience=0)
