"""The default experiment behind ``reglab demo``: an MLP memorizing noisy digits.

scikit-learn's 8x8 digits (shipped with scikit-learn, nothing downloaded) with a small training
subset whose labels are corrupted by symmetric noise (20 % by default, seeded). A wide two-hidden-
layer MLP trained with Adam can fit every training label, the wrong ones included: that is
overfitting in its plainest form. The same model, data and seed are then trained under each
regularization setting below, over several seeds, and the runs are compared on the clean test set.

The file is meant to be read and copied: every setting is a few lines of the public API.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch
from torch import nn

from reglab.data import DigitsData, TensorLoader, load_digits
from reglab.loop import History, evaluate, fit

__all__ = [
    "DemoConfig",
    "DemoResult",
    "RunResult",
    "SETTINGS",
    "Setting",
    "build",
    "run",
    "run_one",
]


@dataclass(frozen=True)
class Setting:
    """One regularization setting of the demo; zero means "off" for every strength."""

    name: str
    title: str
    l2: float = 0.0  # coupled penalty: adds l2/2·Σw² to the loss (reglab.Penalty)
    weight_decay: float = 0.0  # decoupled: w ← w − lr·λ·w (reglab.decoupled(Adam))
    dropout: float = 0.0  # rate of the dropout after each hidden layer
    label_smoothing: float = 0.0  # ε of the smoothed targets (1−ε)·onehot + ε/K
    patience: int | None = None  # early stopping on validation loss, best weights restored
    augment: bool = False  # random shifts, small rotations/zooms and erasing of the training images
    explanation: str = ""
    formula: str = ""


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "none",
            "No regularization",
            explanation="Plain Adam on cross-entropy. With 400 examples, a fifth of them mislabelled, "
            "and about 85 k parameters, nothing stops the network from memorizing the wrong labels.",
            formula="minimize L(w)",
        ),
        Setting(
            "l2",
            "Coupled L2 penalty",
            l2=1e-2,
            explanation="Adds the squared weight norm to the loss, so its gradient λ·w flows through "
            "Adam's per-parameter scaling. Biases and other 1-D parameters are not penalized.",
            formula="minimize L(w) + λ/2·‖w‖², λ = 0.01",
        ),
        Setting(
            "weight_decay",
            "Decoupled weight decay (AdamW)",
            weight_decay=3.0,
            explanation="Shrinks the weights directly at every step, outside Adam's gradient scaling "
            "(Loshchilov & Hutter, 2019). Biases and other 1-D parameters are not decayed.",
            formula="w ← w − lr·λ·w after each Adam step, λ = 3, lr = 0.001",
        ),
        Setting(
            "dropout",
            "Dropout",
            dropout=0.5,
            explanation="Zeroes each hidden unit with probability p during training and rescales the "
            "rest by 1/(1−p), so no unit can rely on a particular other unit (Srivastava et al., 2014).",
            formula="h ← m ⊙ h / (1−p), m ~ Bernoulli(1−p), p = 0.5",
        ),
        Setting(
            "label_smoothing",
            "Label smoothing",
            label_smoothing=0.2,
            explanation="Trains towards a softened target instead of a one-hot vector, so fitting a "
            "wrong label exactly is no longer rewarded without bound (Szegedy et al., 2016).",
            formula="q = (1−ε)·onehot(y) + ε/K, ε = 0.2, K = 10",
        ),
        Setting(
            "early_stopping",
            "Early stopping",
            patience=10,
            explanation="Watches the validation loss and stops once it has not improved for 10 "
            "epochs, then restores the weights of the best epoch.",
            formula="stop at t when min_{s≤t} val(s) was reached at t−10; keep w at argmin val",
        ),
        Setting(
            "combined",
            "Dropout + weight decay + early stopping",
            weight_decay=1.0,
            dropout=0.5,
            patience=10,
            explanation="A sensible default combination: moderate decoupled decay, dropout, and early "
            "stopping on validation loss with the best weights restored.",
            formula="dropout p = 0.5; w ← w − lr·λ·w, λ = 1; stop after 10 epochs without improvement",
        ),
        Setting(
            "augmentation",
            "Image augmentation",
            augment=True,
            explanation="Each training image is shifted by up to one pixel, rotated by up to 10° and "
            "zoomed by up to 10%, and sometimes has a small patch erased (reglab.augment.image."
            "default_policy), so the network never sees exactly the same input twice.",
            formula="minimize E_{t~T} L(w; t(x), y) over random transformations T",
        ),
    )
}

#: The settings ``reglab demo`` runs unless told otherwise (augmentation is opt-in: --settings).
DEFAULT_SETTINGS: tuple[str, ...] = (
    "none",
    "l2",
    "weight_decay",
    "dropout",
    "label_smoothing",
    "early_stopping",
    "combined",
)


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo experiment. :meth:`validate` reports every bad field at once."""

    settings: tuple[str, ...] = DEFAULT_SETTINGS
    seeds: int = 3
    noise: float = 0.2
    epochs: int = 100
    n_train: int = 400
    n_val: int = 300
    hidden: int = 256
    batch_size: int = 32
    lr: float = 1e-3

    def validate(self) -> DemoConfig:
        """Return ``self`` or raise one ``ValueError`` listing every bad field with its value."""
        errors = []
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            errors.append(f"unknown setting(s) {', '.join(map(repr, unknown))} (choose from {', '.join(SETTINGS)})")
        if not self.settings:
            errors.append("settings must name at least one setting; received settings=()")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            errors.append(f"seeds must be an int >= 1; received seeds={self.seeds!r}")
        if not (isinstance(self.noise, (int, float)) and 0.0 <= self.noise < 1.0):
            errors.append(f"noise must be in [0, 1); received noise={self.noise!r}")
        for name in ("epochs", "n_train", "n_val", "hidden", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                errors.append(f"{name} must be an int >= 1; received {name}={value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            errors.append(f"lr must be a finite number > 0; received lr={self.lr!r}")
        if errors:
            raise ValueError("; ".join(errors))
        return self


def make_model(hidden: int, dropout: float) -> nn.Sequential:
    """64 → hidden → hidden → 10 MLP with a dropout site after each hidden layer.

    The dropout modules exist at every rate (p = 0 included), so every setting has the same
    state_dict keys.
    """
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, 10),
    )


def build(
    setting: str | Setting, seed: int = 0, config: DemoConfig | None = None
) -> tuple[nn.Module, torch.optim.Optimizer, Callable, torch.Tensor]:
    """Model, optimizer, training loss and example inputs of one setting (as ``run_one`` uses them).

    Coupled L2 is not part of the optimizer here: ``run_one`` adds it with ``reglab.Penalty``.
    """
    from reglab.decay import decoupled
    from reglab.groups import param_groups

    config = config or DemoConfig()
    s = SETTINGS[setting] if isinstance(setting, str) else setting
    torch.manual_seed(seed)
    model = make_model(config.hidden, s.dropout)
    groups = param_groups(model, weight_decay=s.weight_decay)
    optimizer = decoupled(torch.optim.Adam)(groups, lr=config.lr)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
    example = torch.zeros(2, 64)
    return model, optimizer, loss_fn, example


@dataclass
class RunResult:
    """One (setting, seed) run. Final numbers are measured on the returned model (after restore)."""

    setting: str
    seed: int
    history: History
    test_acc: float
    train_loss: float
    val_loss: float
    epochs_run: int
    best_epoch: int

    @property
    def gap(self) -> float:
        """Generalization gap: validation loss minus training loss (both eval mode, noisy labels)."""
        return self.val_loss - self.train_loss


def run_one(
    setting: str | Setting,
    seed: int,
    config: DemoConfig | None = None,
    data: DigitsData | None = None,
    on_epoch: Callable[[], None] | None = None,
) -> RunResult:
    """Train one setting with one seed and measure it on the clean test split."""
    from reglab.penalties import Penalty
    from reglab.stopping import EarlyStopping

    config = config or DemoConfig()
    s = SETTINGS[setting] if isinstance(setting, str) else setting
    data = data or load_digits(n_train=config.n_train, n_val=config.n_val, noise=config.noise, seed=seed)
    model, optimizer, loss_fn, _ = build(s, seed, config)
    callbacks: list[Any] = []
    if s.l2:
        callbacks.append(Penalty(l2=s.l2).callback(model))
    if s.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=s.patience, restore_best=True))
    train_loader: Any = TensorLoader(data.train.x, data.train.y, batch_size=config.batch_size, shuffle=True, seed=seed)
    if s.augment:
        from reglab.augment import Augmented
        from reglab.augment.image import default_policy

        train_loader = Augmented(train_loader, default_policy((8, 8)), seed=seed)
    big = 4096
    train_eval = TensorLoader(data.train.x, data.train.y, batch_size=big)
    val = TensorLoader(data.val.x, data.val.y, batch_size=big)
    test = TensorLoader(data.test.x, data.test.y, batch_size=big)
    history = fit(
        model,
        train_loader,
        optimizer=optimizer,
        loss_fn=loss_fn,
        eval_loss_fn=nn.functional.cross_entropy,
        epochs=config.epochs,
        # the test split is measured once, after training (and after any restore): looking at it
        # every epoch would invite choosing by it, and costs a third of the run time
        eval_sets={"val": val},
        eval_train=train_eval,
        callbacks=callbacks,
        progress=(lambda state: on_epoch()) if on_epoch else None,
    )
    history.meta.update({"setting": s.name, "seed": seed})
    ce = nn.functional.cross_entropy
    val_loss = evaluate(model, val, ce)["loss"]
    vl = history["val_loss"]
    return RunResult(
        setting=s.name,
        seed=seed,
        history=history,
        test_acc=evaluate(model, test, ce)["acc"],
        train_loss=evaluate(model, train_eval, ce)["loss"],
        val_loss=val_loss,
        epochs_run=len(history),
        best_epoch=min(range(len(vl)), key=vl.__getitem__) + 1,
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class DemoResult:
    """All runs of a demo, grouped by setting in the configured order."""

    config: DemoConfig
    runs: dict[str, list[RunResult]] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """One row per setting: mean and std over seeds of test accuracy, gap, train and val loss."""
        rows = []
        for name, runs in self.runs.items():
            row: dict[str, Any] = {"setting": name, "title": SETTINGS[name].title, "seeds": len(runs)}
            for key in ("test_acc", "gap", "train_loss", "val_loss", "epochs_run"):
                mean, std = _mean_std([float(getattr(r, key)) for r in runs])
                row[key], row[f"{key}_std"] = mean, std
            rows.append(row)
        return rows

    def config_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self.config, f.name) for f in fields(self.config)}


def run(
    config: DemoConfig | None = None,
    *,
    on_epoch: Callable[[], None] | None = None,
    on_run: Callable[[RunResult], None] | None = None,
) -> DemoResult:
    """Run every configured setting over ``config.seeds`` seeds.

    Seed ``k`` draws the same data split, label noise and initial weights for every setting, so
    settings are compared on equal terms. ``on_epoch`` is called after every epoch and ``on_run``
    after every run (e.g. to drive a progress bar).

    Raises:
        ValueError: if the configuration is invalid (every bad field is named).
    """
    config = (config or DemoConfig()).validate()
    result = DemoResult(config)
    for name in config.settings:
        result.runs[name] = []
    for seed in range(config.seeds):
        data = load_digits(n_train=config.n_train, n_val=config.n_val, noise=config.noise, seed=seed)
        for name in config.settings:
            run_result = run_one(name, seed, config, data, on_epoch)
            result.runs[name].append(run_result)
            if on_run is not None:
                on_run(run_result)
    return result
