"""Model capacity with polynomial regression: underfitting and overfitting (D2L §3.6 / §4.4 v0.17).

Setup, as in the book: ``x ~ N(0, 1)``, features ``x^i / i!`` for ``i = 0..20``,
``y = 5 + 1.2·x − 3.4·x²/2! + 5.6·x³/3! + ε`` with ``ε ~ N(0, 0.1²)``, 100 training and 100
test points. A linear model without bias over the first ``k`` features (a polynomial of degree
``k − 1``) is trained with minibatch SGD (lr 0.01, batch 10, mean squared error) for 400 epochs,
or 1500 epochs for degree 20:

* degree 3 matches the generating function and recovers its coefficients;
* degree 1 (a line) cannot represent the cubic: training error stays high (underfitting);
* degree 20 has more capacity than the data supports: its test error exceeds its training error.

The fit regime of each model is diagnosed from its curves with :func:`reglab.diagnosis.diagnose`.
The book also counts monomials: with ``k`` variables there are ``C(k − 1 + d, k − 1)`` monomials
of degree exactly ``d``, which is why capacity grows so fast with degree in several dimensions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from reglab.data import RegressionData, TensorLoader, make_polynomial
from reglab.loop import fit
from reglab.recipes._repro import Check, Plot, Repro, ReproResult, Table, Ticker, mean_std, pm

__all__ = ["RECIPE", "least_squares", "monomial_count", "run", "train_degree"]

TRUE = (5.0, 1.2, -3.4, 5.6)
LR, BATCH = 0.01, 10
EPOCHS = {1: 400, 3: 400, 20: 1500}


def monomial_count(k: int, d: int) -> int:
    """Number of monomials of degree exactly ``d`` in ``k`` variables: ``C(k − 1 + d, k − 1)``.

    Raises:
        ValueError: if ``k < 1`` or ``d < 0``.

    Example:
        >>> monomial_count(20, 2)
        210
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1; received k={k!r}")
    if not isinstance(d, int) or d < 0:
        raise ValueError(f"d must be an int >= 0; received d={d!r}")
    return math.comb(k - 1 + d, k - 1)


def train_degree(data: RegressionData, degree: int, seed: int, epochs: int) -> dict[str, Any]:
    """Fit ``nn.Linear(degree + 1, 1, bias=False)`` on the first ``degree + 1`` features.

    Returns:
        ``{"w": [...], "train_loss": [...], "test_loss": [...]}`` (MSE per epoch, eval mode).
    """
    k = degree + 1
    xtr, xte = data.train.x[:, :k], data.test.x[:, :k]
    torch.manual_seed(seed)
    model = nn.Linear(k, 1, bias=False)
    history = fit(
        model,
        TensorLoader(xtr, data.train.y, batch_size=BATCH, shuffle=True, seed=seed),
        optimizer=torch.optim.SGD(model.parameters(), lr=LR),
        loss_fn=nn.functional.mse_loss,
        epochs=epochs,
        eval_train=TensorLoader(xtr, data.train.y, batch_size=len(xtr)),
        eval_sets={"test": TensorLoader(xte, data.test.y, batch_size=len(xte))},
    )
    return {
        "w": model.weight.detach().flatten().tolist(),
        "train_loss": history["train_loss"],
        "test_loss": history["test_loss"],
    }


def least_squares(data: RegressionData, degree: int) -> torch.Tensor:
    """The exact least-squares weights of degree ``degree`` on the training split (float64 solve)."""
    x = data.train.x[:, : degree + 1].double()
    return torch.linalg.lstsq(x, data.train.y.double()).solution.flatten().float()


def _diagnose(train: list[float], test: list[float], baseline: float) -> tuple[str, str]:
    from reglab.diagnosis import diagnose

    d = diagnose(train, test, baseline_loss=baseline)
    advice = d.advice if isinstance(d.advice, str) else "; ".join(map(str, d.advice))
    return str(d.regime), advice


def run(*, fast: bool = False, seeds: int | None = None, progress=None) -> ReproResult:
    """Fit degrees 1, 3 and 20 over seeds; check the book's three claims.

    Args:
        fast: 2 seeds instead of 5 (epochs as in the book).
        seeds: number of seeds (overrides the default).
        progress: optional ``progress(completed, total, description)`` sink.
    """
    n_seeds = seeds or (2 if fast else 5)
    tick = Ticker(n_seeds * len(EPOCHS), progress)
    fits: dict[int, list[dict[str, Any]]] = {deg: [] for deg in EPOCHS}
    regimes: dict[int, list[str]] = {deg: [] for deg in EPOCHS}
    advice: dict[int, str] = {}
    baselines = []
    data_of: list[RegressionData] = []
    for seed in range(n_seeds):
        data = make_polynomial(max_degree=20, coefficients=TRUE, noise_std=0.1, seed=seed)
        data_of.append(data)
        # the loss of the best constant predictor: the scale against which "high" loss is judged
        baseline = float(((data.train.y - data.train.y.mean()) ** 2).mean())
        baselines.append(baseline)
        for deg, epochs in EPOCHS.items():
            result = train_degree(data, deg, seed, epochs)
            fits[deg].append(result)
            regime, adv = _diagnose(result["train_loss"], result["test_loss"], baseline)
            regimes[deg].append(regime)
            advice.setdefault(deg, adv)
            tick(f"degree {deg} seed {seed}")

    def final(deg: int, key: str) -> list[float]:
        return [f[key][-1] for f in fits[deg]]

    w3 = torch.tensor([f["w"] for f in fits[3]])
    err3 = (w3 - torch.tensor(TRUE)).abs()
    # the least-squares fit of the same 100 points: the point SGD converges to given enough steps
    ls3 = torch.stack([least_squares(data_of[seed], 3) for seed in range(n_seeds)])
    err_ls3 = (ls3 - torch.tensor(TRUE)).abs()
    worst = [seed for seed in range(n_seeds) if float(err3[seed].max()) >= 0.2]
    tr1 = final(1, "train_loss")
    tr20, te20 = final(20, "train_loss"), final(20, "test_loss")
    checks = [
        Check(
            "degree 3 recovers every coefficient within 0.2 (every seed)",
            float(err3.max()) < 0.2,
            f"max |w − w_true| = {float(err3.max()):.3f}",
        ),
        Check("degree 1: train MSE > 1 (every seed)", min(tr1) > 1, f"train MSE = {pm(tr1)}"),
        Check(
            "degree 1 diagnosed as underfitting (every seed)",
            all(r == "underfitting" for r in regimes[1]),
            f"diagnoses: {', '.join(regimes[1])}",
        ),
        Check(
            "degree 20: test MSE > train MSE (mean over seeds)",
            mean_std(te20)[0] > mean_std(tr20)[0],
            f"train {pm(tr20)}, test {pm(te20)}; test above train in "
            f"{sum(b > a for a, b in zip(tr20, te20))} of {n_seeds} seeds",
        ),
    ]
    mean_w3 = w3.mean(0).tolist()
    published = [
        ["degree-3 weights", "≈ [5.0, 1.2, −3.4, 5.6] (true values)", "[" + ", ".join(f"{v:.3f}" for v in mean_w3) + "]"],
        ["degree 1", "train loss stays high: underfitting", f"train MSE {pm(tr1)}; diagnosed {', '.join(regimes[1])}"],
        ["degree 20", "test loss above train loss: overfitting", f"train {pm(tr20)}, test {pm(te20)}"],
    ]
    plots = []
    for deg in EPOCHS:
        f = fits[deg][0]
        xs = list(range(1, len(f["train_loss"]) + 1))
        plots.append(
            Plot(
                f"Degree {deg} (seed 0)",
                x_label="epoch",
                y_label="MSE",
                log_y=True,
                series={"train": [xs, f["train_loss"]], "test": [xs, f["test_loss"]]},
                hlines={"noise floor σ² = 0.01": 0.01},
                caption={
                    1: "A line cannot follow a cubic: both errors stay far above the noise floor.",
                    3: "The right capacity: both errors reach the noise floor.",
                    20: "Extra capacity: training error keeps falling below the test error.",
                }[deg],
            )
        )
    tables = [
        Table(
            "Final errors and diagnosis (mean ± std over seeds)",
            ["degree", "epochs", "train MSE", "test MSE", "diagnosis", "advice"],
            [
                [deg, EPOCHS[deg], pm(final(deg, "train_loss")), pm(final(deg, "test_loss")), ", ".join(sorted(set(regimes[deg]))), advice[deg]]
                for deg in EPOCHS
            ],
        ),
        Table(
            "Degree-3 coefficients (mean ± std over seeds)",
            ["coefficient", "true", "learned (SGD)", "least squares"],
            [[f"w{i}", TRUE[i], pm(w3[:, i].tolist(), 4), pm(ls3[:, i].tolist(), 4)] for i in range(4)],
            note="Least squares: the exact minimiser of the training MSE on the same points, which SGD approaches.",
        ),
        Table(
            "Monomials of degree d in k variables: C(k−1+d, k−1)",
            ["k \\ d"] + [str(d) for d in (1, 2, 3, 5, 10, 20)],
            [[k] + [monomial_count(k, d) for d in (1, 2, 3, 5, 10, 20)] for k in (1, 2, 10, 20, 100)],
            note="With one variable there is one monomial per degree, so degree 20 has 21 weights; "
            "with 20 variables degree 3 alone has 1540.",
        ),
    ]
    if worst:
        recovery = (
            f"Degree 3 recovers the generating coefficients within 0.2 in {n_seeds - len(worst)} of {n_seeds} seeds; "
            + "; ".join(
                f"in seed {seed} the SGD weights are off by {float(err3[seed].max()):.3f} while the least-squares fit of the "
                f"same 100 points is off by only {float(err_ls3[seed].max()):.3f} (largest |x| in that sample "
                f"{float(data_of[seed].train.x[:, 1].abs().max()):.2f})"
                for seed in worst
            )
            + ". That is not a wrong setup but the book's fixed budget: with few large |x| the x³/3! feature is "
            "tiny, its weight gets tiny gradients, and 400 epochs of SGD at lr 0.01 have not converged along that "
            "direction (for seed 2, 4000 epochs reach the least-squares weights). The book's single sample gets within "
            "about 0.06; over seeds the 0.2 threshold is not met by every sample."
        )
    else:
        recovery = (
            f"Degree 3 recovers the generating coefficients (largest error {float(err3.max()):.3f}; least squares on "
            f"the same points {float(err_ls3.max()):.3f}) and both errors reach the noise floor."
        )
    diagnosis = (
        recovery + f" The line underfits: train MSE {pm(tr1)}, diagnosed {', '.join(regimes[1])}. "
        f"Degree 20 ends with test MSE {pm(te20)} above its train MSE {pm(tr20)}; with the x^i/i! scaling "
        "the high-order weights get tiny gradients, so SGD overfits only mildly in 1500 epochs, as in the book."
    )
    return ReproResult(
        name="polynomial",
        title="Polynomial capacity: underfitting and overfitting",
        source="Zhang, Lipton, Li, Smola — Dive into Deep Learning, Model Selection, Underfitting, and Overfitting "
        "(polynomial regression)",
        setup="x ~ N(0, 1), features x^i/i! up to degree 20, y = 5 + 1.2x − 3.4x²/2! + 5.6x³/3! + N(0, 0.1²), "
        "100 train / 100 test; linear model without bias on the first d+1 features; SGD lr 0.01, batch 10, MSE; "
        f"400 epochs (1500 for degree 20); {n_seeds} seeds.",
        published=published,
        checks=checks,
        diagnosis=diagnosis,
        tables=tables,
        plots=plots,
        metrics={
            "seeds": n_seeds,
            "weights": {str(deg): [f["w"] for f in fits[deg]] for deg in EPOCHS},
            "train_mse": {str(deg): final(deg, "train_loss") for deg in EPOCHS},
            "test_mse": {str(deg): final(deg, "test_loss") for deg in EPOCHS},
            "diagnosis": {str(deg): regimes[deg] for deg in EPOCHS},
            "constant_predictor_mse": baselines,
            "coefficient_error_degree3": err3.tolist(),
            "least_squares_error_degree3": err_ls3.tolist(),
        },
    )


RECIPE = Repro(
    name="polynomial",
    title="Polynomial capacity: underfitting and overfitting (D2L)",
    order=20,
    run=run,
    requires=("reglab.diagnosis",),
)
