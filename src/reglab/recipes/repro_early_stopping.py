"""Early stopping under label noise: the best-validation epoch beats the last one.

A network large enough to memorize its training set first learns the patterns shared by most
examples and only later memorizes the mislabelled ones (Arpit et al., "A Closer Look at
Memorization in Deep Networks", ICML 2017); stopping at the epoch of lowest validation loss
keeps the first and skips the second (Prechelt, "Early Stopping — But When?", 1998; Li,
Soltanolkotabi, Oymak, "Gradient Descent with Early Stopping is Provably Robust to Label Noise",
AISTATS 2020).

Setup: scikit-learn's digits, 30 % of training *and* validation labels flipped to a different
class (a practitioner only has noisy labels), clean test set; an MLP 64-256-256-10 trained with
Adam. Each seed trains once for the whole budget with ``reglab.EarlyStopping(patience=None,
restore_best=True)`` (it only tracks and restores the best-validation weights), so the test
accuracy at the final epoch and at the best-validation epoch come from the same run; a second
run with ``patience=10`` shows where a practical stopper ends.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from reglab.data import TensorLoader, load_digits
from reglab.loop import evaluate, fit
from reglab.recipes._repro import Check, Plot, Repro, ReproResult, Table, Ticker, mean_std, pm

__all__ = ["RECIPE", "run", "train"]

NOISE = 0.3


def _model(seed: int, hidden: int = 256) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train(seed: int, epochs: int, patience: int | None, n_train: int = 500, on_epoch=None) -> dict[str, Any]:
    """Train one MLP on noisy digits with ``EarlyStopping(patience=patience, restore_best=True)``.

    Returns:
        the history columns, the epoch of the best validation loss, the test accuracy at the final
        epoch (before restoring) and of the restored model.
    """
    from reglab.stopping import EarlyStopping

    data = load_digits(n_train=n_train, n_val=300, noise=NOISE, seed=seed)
    model = _model(seed)
    stopper = EarlyStopping(monitor="val_loss", patience=patience, restore_best=True)
    big = 4096
    test = TensorLoader(data.test.x, data.test.y, batch_size=big)
    history = fit(
        model,
        TensorLoader(data.train.x, data.train.y, batch_size=32, shuffle=True, seed=seed),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        loss_fn=nn.functional.cross_entropy,
        epochs=epochs,
        eval_train=TensorLoader(data.train.x, data.train.y, batch_size=big),
        eval_sets={"val": TensorLoader(data.val.x, data.val.y, batch_size=big), "test": test},
        callbacks=[stopper],
        progress=(lambda state: on_epoch()) if on_epoch else None,
    )
    restored = evaluate(model, test, nn.functional.cross_entropy)["acc"]
    clean_train = evaluate(model, TensorLoader(data.train.x, data.train_clean_y, batch_size=big), nn.functional.cross_entropy)
    return {
        "train_loss": history["train_loss"],
        "train_acc": history["train_acc"],
        "val_loss": history["val_loss"],
        "test_acc": history["test_acc"],
        "best_epoch": int(stopper.best_epoch),
        "epochs_run": len(history),
        "final_test_acc": history["test_acc"][-1],
        "restored_test_acc": restored,
        "restored_clean_train_acc": clean_train["acc"],
    }


def run(*, fast: bool = False, seeds: int | None = None, progress=None) -> ReproResult:
    """Compare test accuracy at the best-validation epoch and at the final epoch, over seeds.

    Args:
        fast: 3 seeds, 40 epochs, instead of 5 seeds, 150 epochs.
        seeds: number of seeds (overrides the default).
        progress: optional ``progress(completed, total, description)`` sink (one unit per epoch).
    """
    from reglab.diagnosis import diagnose

    n_seeds = seeds or (3 if fast else 5)
    epochs = 40 if fast else 150
    tick = Ticker(2 * n_seeds * epochs, progress)
    full, stopped, regimes = [], [], []
    for seed in range(n_seeds):
        full.append(train(seed, epochs, None, on_epoch=lambda: tick(f"full budget, seed {seed}")))
        before = tick.done
        stopped.append(train(seed, epochs, 10, on_epoch=lambda: tick(f"patience 10, seed {seed}")))
        tick("patience 10 done", epochs - (tick.done - before))
        regimes.append(diagnose(full[-1]["train_loss"], full[-1]["val_loss"], baseline_loss=math.log(10)).regime)

    best = [r["restored_test_acc"] for r in full]
    last = [r["final_test_acc"] for r in full]
    at_best = [r["test_acc"][r["best_epoch"] - 1] for r in full]
    consistent = max(abs(a - b) for a, b in zip(best, at_best))
    wins = sum(b > f for b, f in zip(best, last))
    checks = [
        Check(
            "test accuracy at the best-validation epoch > at the final epoch (mean over seeds)",
            mean_std(best)[0] > mean_std(last)[0],
            f"best-val epoch {pm(best, scale=100)} % vs final {pm(last, scale=100)} %; higher in {wins} of {n_seeds} seeds",
        ),
        Check(
            "the restored weights are those of the best-validation epoch (same test accuracy as recorded then)",
            consistent < 1e-9,
            f"max difference {consistent:.1e}",
        ),
        Check(
            "without stopping the network fits flipped labels: final train accuracy on the given labels > 75 % "
            "(at most 70 % is possible without fitting flipped labels)",
            min(r["train_acc"][-1] for r in full) > 0.75,
            f"final train accuracy {pm([r['train_acc'][-1] for r in full], scale=100)} %",
        ),
    ]
    published = [
        ["test accuracy, best-validation epoch vs final", "higher at the early epoch (memorization comes late)",
         f"{pm(best, scale=100)} % vs {pm(last, scale=100)} %"],
        ["epoch of lowest validation loss", "early, well before the end", f"{pm([r['best_epoch'] for r in full])} of {epochs}"],
        ["patience 10: stop epoch / restored test accuracy", "—",
         f"{pm([r['epochs_run'] for r in stopped])} / {pm([r['restored_test_acc'] for r in stopped], scale=100)} %"],
    ]
    r0 = full[0]
    xs = list(range(1, len(r0["val_loss"]) + 1))
    plots = [
        Plot(
            "Losses under 30 % label noise (seed 0)",
            x_label="epoch",
            y_label="cross-entropy",
            log_y=True,
            series={"train (noisy labels)": [xs, r0["train_loss"]], "validation (noisy labels)": [xs, r0["val_loss"]]},
            caption=f"Validation loss is lowest at epoch {r0['best_epoch']}; afterwards the network fits the flipped "
            "labels and the validation loss climbs.",
        ),
        Plot(
            "Clean test accuracy (seed 0)",
            x_label="epoch",
            y_label="accuracy",
            series={"test": [xs, r0["test_acc"]], "train (noisy labels)": [xs, r0["train_acc"]]},
            hlines={"restored (best validation)": r0["restored_test_acc"]},
            caption="Training accuracy on the given labels climbs towards 100 % — 30 % of which are wrong — while test "
            "accuracy falls from its early peak.",
        ),
    ]
    table = Table(
        "Per seed",
        ["seed", "best epoch", "test acc at best", "test acc final", "patience-10 stop", "patience-10 test acc", "diagnosis (full run)"],
        [
            [s, f["best_epoch"], f"{100 * f['restored_test_acc']:.1f} %", f"{100 * f['final_test_acc']:.1f} %",
             p["epochs_run"], f"{100 * p['restored_test_acc']:.1f} %", regimes[s]]
            for s, (f, p) in enumerate(zip(full, stopped))
        ],
    )
    diff = 100 * (mean_std(best)[0] - mean_std(last)[0])
    diagnosis = (
        f"Trained for all {epochs} epochs the network ends at {pm([r['train_acc'][-1] for r in full], scale=100)} % training "
        f"accuracy on labels of which 30 % are wrong: it fitted many of the flipped ones (diagnosed: {', '.join(sorted(set(regimes)))}). "
        f"Its clean test accuracy at the epoch of lowest validation loss is {diff:+.1f} points relative to the final epoch "
        f"(higher in {wins} of {n_seeds} seeds). The validation set carries the same noise and still picks a good epoch."
    )
    return ReproResult(
        name="early_stopping",
        title="Early stopping under label noise",
        source="Prechelt 1998 (Early Stopping — But When?); Arpit et al. 2017 (A Closer Look at Memorization); "
        "Li, Soltanolkotabi, Oymak 2020 (early stopping is robust to label noise)",
        setup=f"digits, 500 train / 300 validation (both with 30 % symmetric label noise) / 997 clean test; MLP "
        f"64-256-256-10, Adam lr 1e-3, batch 32, {epochs} epochs, {n_seeds} seeds; reglab.EarlyStopping on val_loss.",
        published=published,
        checks=checks,
        diagnosis=diagnosis,
        tables=[table],
        plots=plots,
        metrics={
            "seeds": n_seeds,
            "epochs": epochs,
            "test_acc_best_val_epoch": best,
            "test_acc_final_epoch": last,
            "best_epoch": [r["best_epoch"] for r in full],
            "patience10_stop_epoch": [r["epochs_run"] for r in stopped],
            "patience10_test_acc": [r["restored_test_acc"] for r in stopped],
            "diagnosis": regimes,
            "curves_seed0": {k: r0[k] for k in ("train_loss", "val_loss", "train_acc", "test_acc")},
        },
    )


RECIPE = Repro(
    name="early_stopping",
    title="Early stopping under label noise",
    order=70,
    run=run,
    requires=("reglab.stopping", "reglab.diagnosis"),
)
