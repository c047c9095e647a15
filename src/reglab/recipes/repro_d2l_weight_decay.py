"""Weight decay on high-dimensional linear regression (Dive into Deep Learning, §3.7).

Setup, as in the book: ``d = 200`` features, ``n_train = 20``, ``n_test = 100``,
``y = 0.05 + Σ_i 0.01·x_i + ε`` with ``x ~ N(0, I)``, ``ε ~ N(0, 0.01²)``. A linear model with
weights initialised from ``N(0, 1)`` and bias 0 is trained with minibatch SGD (batch size 1,
100 epochs, lr 0.003) on the squared loss ``(ŷ − y)²/2`` plus the penalty ``λ/2·‖w‖²`` (bias not
penalised), for ``λ ∈ {0, 3}``.

It is trained three ways, which must agree:

* **from scratch**, line by line as the book writes it (tensors, ``backward``, a manual SGD step);
* **with the library**: ``reglab.fit`` with ``reglab.Penalty(l2=λ)`` as a callback on the
  weight matrix (``l2=λ`` adds ``λ/2·Σw²``, the book's penalty);
* **with torch's optimizer**: ``torch.optim.SGD`` with ``weight_decay=λ`` on the weight only,
  the independent reference (its decay is the gradient ``λ·w`` of the same penalty).

The closed-form ridge solution (SVD of the centred design, unpenalised bias) is computed over a
path of ``λ`` for comparison: at ``λ = 3`` SGD lands near it, while at ``λ = 0`` SGD keeps the
180-dimensional part of its random initialisation that the 20 training points never see, which
is why its norm stays near ``√180 ≈ 13`` instead of the minimum-norm interpolant's 0.05.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from reglab.data import RegressionData, TensorLoader, make_high_dim_regression
from reglab.loop import fit
from reglab.recipes._repro import Check, Plot, Repro, ReproResult, Table, Ticker, fmt, mean_std, pm

__all__ = ["RECIPE", "ridge_path", "run", "train_from_scratch", "train_library", "train_torch_sgd"]

LAMBDAS = (0.0, 3.0)
EPOCHS, LR, BATCH = 100, 0.003, 1
PUBLISHED_NORM = {0.0: 15.1, 3.0: 0.035}


def _init_weight(dim: int, seed: int) -> torch.Tensor:
    return torch.randn(dim, 1, generator=torch.Generator().manual_seed(10_000 + seed))


def train_from_scratch(data: RegressionData, lambd: float, seed: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """The book's loop: ``l = (ŷ−y)²/2 + λ·Σw²/2``; ``w ← w − lr·∇w`` (batch size 1).

    Returns:
        ``{"w": weight (d, 1), "b": bias, "train_loss": [...], "test_loss": [...]}`` with one loss
        per epoch (mean ``(ŷ−y)²/2``, penalty not included).
    """
    w = _init_weight(data.train.x.shape[1], seed).requires_grad_(True)
    b = torch.zeros(1, requires_grad=True)
    loader = TensorLoader(data.train.x, data.train.y, batch_size=BATCH, shuffle=True, seed=seed)
    train_curve, test_curve = [], []
    for _ in range(epochs):
        for x, y in loader:
            loss = ((x @ w + b - y) ** 2 / 2).mean() + lambd * (w**2).sum() / 2
            loss.backward()
            with torch.no_grad():
                for p in (w, b):
                    p -= LR * p.grad
                    p.grad = None
        with torch.no_grad():
            train_curve.append(float(((data.train.x @ w + b - data.train.y) ** 2 / 2).mean()))
            test_curve.append(float(((data.test.x @ w + b - data.test.y) ** 2 / 2).mean()))
    return {"w": w.detach(), "b": float(b.detach()), "train_loss": train_curve, "test_loss": test_curve}


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2 / 2).mean()


def _linear(dim: int, seed: int) -> nn.Linear:
    model = nn.Linear(dim, 1)
    with torch.no_grad():
        model.weight.copy_(_init_weight(dim, seed).T)
        model.bias.zero_()
    return model


def _fit_linear(data: RegressionData, model: nn.Linear, optimizer, seed: int, callbacks, epochs: int) -> dict[str, Any]:
    big = len(data.test)
    history = fit(
        model,
        TensorLoader(data.train.x, data.train.y, batch_size=BATCH, shuffle=True, seed=seed),
        optimizer=optimizer,
        loss_fn=_half_mse,
        epochs=epochs,
        eval_sets={"test": TensorLoader(data.test.x, data.test.y, batch_size=big)},
        eval_train=TensorLoader(data.train.x, data.train.y, batch_size=big),
        callbacks=callbacks,
    )
    return {
        "w": model.weight.detach().T.clone(),
        "b": float(model.bias.detach()),
        "train_loss": history["train_loss"],
        "test_loss": history["test_loss"],
    }


def train_library(data: RegressionData, lambd: float, seed: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """``reglab.fit`` + ``reglab.Penalty(l2=λ)`` on the weight (the bias is not penalised)."""
    from reglab.penalties import Penalty

    model = _linear(data.train.x.shape[1], seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    callbacks = [Penalty(l2=lambd).callback(model)] if lambd else []
    return _fit_linear(data, model, optimizer, seed, callbacks, epochs)


def train_torch_sgd(data: RegressionData, lambd: float, seed: int, epochs: int = EPOCHS) -> dict[str, Any]:
    """The reference: ``torch.optim.SGD(weight_decay=λ)`` on the weight, no decay on the bias."""
    model = _linear(data.train.x.shape[1], seed)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "weight_decay": lambd}, {"params": [model.bias], "weight_decay": 0.0}], lr=LR
    )
    return _fit_linear(data, model, optimizer, seed, [], epochs)


def ridge_path(data: RegressionData, lambdas: list[float]) -> list[dict[str, float]]:
    """Closed-form minimiser of ``mean((x·w + b − y)²)/2 + λ/2·‖w‖²`` for each ``λ`` (bias free).

    With the centred design ``X_c = U S Vᵀ``: ``w = V diag(s / (s² + nλ)) Uᵀ y_c``,
    ``b = ȳ − x̄·w`` (singular values at rounding level count as zero); ``λ = 0`` gives the
    minimum-norm interpolant.

    Returns:
        one ``{"lambda", "norm", "train_loss", "test_loss"}`` per ``λ`` (losses as ``(ŷ−y)²/2``).
    """
    x, y = data.train.x.double(), data.train.y.double()
    n = x.shape[0]
    x_mean, y_mean = x.mean(0, keepdim=True), y.mean(0, keepdim=True)
    u, s, vh = torch.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)
    # centring removes one direction: singular values at rounding level are zero (as in pinv)
    keep = s > s.max() * max(x.shape) * torch.finfo(s.dtype).eps
    rows = []
    for lambd in lambdas:
        shrink = torch.where(keep, s / (s**2 + n * lambd).clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        w = vh.T @ (shrink.unsqueeze(1) * uty)
        b = y_mean - x_mean @ w
        train = float(((x @ w + b - y) ** 2 / 2).mean())
        test = float(((data.test.x.double() @ w + b - data.test.y.double()) ** 2 / 2).mean())
        rows.append({"lambda": float(lambd), "norm": float(w.norm()), "train_loss": train, "test_loss": test})
    return rows


def run(*, fast: bool = False, seeds: int | None = None, progress=None) -> ReproResult:
    """Train λ ∈ {0, 3} over seeds three ways and compare with the book and the ridge path.

    Args:
        fast: 2 seeds instead of 5 (the training itself is already small: the book's full setup).
        seeds: number of seeds (overrides the default).
        progress: optional ``progress(completed, total, description)`` sink.
    """
    n_seeds = seeds or (2 if fast else 5)
    tick = Ticker(n_seeds * len(LAMBDAS) * 3 + 1, progress)
    runs: dict[str, dict[float, list[dict[str, Any]]]] = {"scratch": {}, "library": {}, "torch": {}}
    ridge_at: dict[float, list[dict[str, float]]] = {lam: [] for lam in LAMBDAS}
    for lambd in LAMBDAS:
        for way in runs:
            runs[way][lambd] = []
    path_lambdas = [0.0] + [10**e for e in torch.linspace(-4, 2, 25).tolist()]
    path = []
    for seed in range(n_seeds):
        data = make_high_dim_regression(seed=seed)
        for lambd in LAMBDAS:
            runs["scratch"][lambd].append(train_from_scratch(data, lambd, seed))
            tick(f"from scratch λ={lambd:g} seed {seed}")
            runs["library"][lambd].append(train_library(data, lambd, seed))
            tick(f"reglab.Penalty λ={lambd:g} seed {seed}")
            runs["torch"][lambd].append(train_torch_sgd(data, lambd, seed))
            tick(f"torch SGD λ={lambd:g} seed {seed}")
            ridge_at[lambd].append(ridge_path(data, [lambd])[0])
        if seed == 0:
            path = ridge_path(data, path_lambdas)
    tick("ridge path")

    def norms(way: str, lambd: float) -> list[float]:
        return [float(r["w"].norm()) for r in runs[way][lambd]]

    def final_test(way: str, lambd: float) -> list[float]:
        return [r["test_loss"][-1] for r in runs[way][lambd]]

    n0, n3 = norms("scratch", 0.0), norms("scratch", 3.0)
    t0, t3 = final_test("scratch", 0.0), final_test("scratch", 3.0)
    ratios = [a / b for a, b in zip(t0, t3)]
    agree = max(
        float((a["w"] - b["w"]).abs().max())
        for lambd in LAMBDAS
        for a, b in zip(runs["scratch"][lambd] + runs["library"][lambd], runs["torch"][lambd] * 2)
    )
    ridge3 = [r["norm"] for r in ridge_at[3.0]]
    checks = [
        Check("λ=3: ‖w‖ in [0.02, 0.06] for every seed", all(0.02 <= v <= 0.06 for v in n3), f"‖w‖ = {pm(n3)}"),
        Check("λ=0: ‖w‖ in [10, 17] for every seed", all(10 <= v <= 17 for v in n0), f"‖w‖ = {pm(n0)}"),
        Check(
            "test loss ratio λ=0 / λ=3 > 1000 for every seed",
            min(ratios) > 1000,
            f"ratio min {min(ratios):.0f}, mean {mean_std(ratios)[0]:.0f}",
        ),
        Check(
            "from scratch, reglab.Penalty and torch SGD(weight_decay) give the same weights (max |Δw| < 1e-4)",
            agree < 1e-4,
            f"max |Δw| = {agree:.1e}",
        ),
        Check(
            "λ=3: SGD's ‖w‖ within 35 % of the closed-form ridge norm (mean over seeds)",
            abs(mean_std(n3)[0] / mean_std(ridge3)[0] - 1) < 0.35,
            f"SGD {mean_std(n3)[0]:.4f} vs ridge {mean_std(ridge3)[0]:.4f}",
        ),
    ]
    published = [
        ["‖w‖, λ = 0", fmt(PUBLISHED_NORM[0.0]), pm(n0)],
        ["‖w‖, λ = 3", fmt(PUBLISHED_NORM[3.0]), pm(n3)],
        ["test loss, λ = 0", "large (overfits)", pm(t0)],
        ["test loss, λ = 3", "small", pm(t3)],
    ]
    scratch0, scratch3 = runs["scratch"][0.0][0], runs["scratch"][3.0][0]
    epochs = list(range(1, EPOCHS + 1))
    plots = [
        Plot(
            "Training and test loss (seed 0)",
            x_label="epoch",
            y_label="(ŷ − y)²/2",
            log_y=True,
            series={
                "train, λ=0": [epochs, scratch0["train_loss"]],
                "test, λ=0": [epochs, scratch0["test_loss"]],
                "train, λ=3": [epochs, scratch3["train_loss"]],
                "test, λ=3": [epochs, scratch3["test_loss"]],
            },
            caption="Without the penalty the training loss goes to zero while the test loss stays large: "
            "20 points, 200 weights. With λ=3 both losses stay small and close.",
        ),
        Plot(
            "Closed-form ridge path (seed 0)",
            x_label="λ",
            y_label="value",
            log_x=True,
            log_y=True,
            series={
                "‖w‖": [[r["lambda"] for r in path[1:]], [r["norm"] for r in path[1:]]],
                "test loss": [[r["lambda"] for r in path[1:]], [r["test_loss"] for r in path[1:]]],
                "train loss": [[r["lambda"] for r in path[1:]], [max(r["train_loss"], 1e-12) for r in path[1:]]],
            },
            hlines={"‖w_true‖ = 0.141": 0.01 * math.sqrt(200)},
            caption="Exact minimisers over λ. The norm of the ridge solution is at most 0.05 for every λ; "
            "SGD's λ=0 norm of ~13 comes from its random initialisation, not from the data.",
        ),
    ]
    tables = [
        Table(
            "Weight norm and test loss by training method (mean ± std over seeds)",
            ["method", "‖w‖ λ=0", "‖w‖ λ=3", "test loss λ=0", "test loss λ=3"],
            [
                [label, pm(norms(way, 0.0)), pm(norms(way, 3.0)), pm(final_test(way, 0.0)), pm(final_test(way, 3.0))]
                for way, label in (
                    ("scratch", "from scratch (book)"),
                    ("library", "reglab.fit + Penalty(l2=λ)"),
                    ("torch", "torch SGD(weight_decay=λ)"),
                )
            ]
            + [
                [
                    "closed-form ridge",
                    pm([r["norm"] for r in ridge_at[0.0]]),
                    pm(ridge3),
                    pm([r["test_loss"] for r in ridge_at[0.0]]),
                    pm([r["test_loss"] for r in ridge_at[3.0]]),
                ]
            ],
            note="Closed-form ridge at λ=0 is the minimum-norm interpolant.",
        ),
        Table(
            "Ridge path (seed 0)",
            ["λ", "‖w‖", "train loss", "test loss"],
            [[fmt(r["lambda"]), fmt(r["norm"]), fmt(r["train_loss"]), fmt(r["test_loss"])] for r in path[::3]],
        ),
    ]
    diagnosis = (
        f"Without weight decay the model interpolates the 20 training points (train loss "
        f"{pm([r['train_loss'][-1] for r in runs['scratch'][0.0]])}) and overfits: test loss {pm(t0)}. "
        f"With λ=3 the weights shrink to ‖w‖ = {pm(n3)}, close to the book's 0.035 and to the exact ridge "
        f"solution ({pm(ridge3)}); test loss falls by a factor of {mean_std(ratios)[0]:.0f}. "
        f"The book's λ=0 norm (15.1) and ours ({pm(n0)}) are both set by the N(0, 1) initialisation of "
        "200 weights, most of which the 20 training points never move."
    )
    metrics = {
        "seeds": n_seeds,
        "norm": {f"{way}_lambda_{lam:g}": norms(way, lam) for way in runs for lam in LAMBDAS},
        "test_loss": {f"{way}_lambda_{lam:g}": final_test(way, lam) for way in runs for lam in LAMBDAS},
        "test_loss_ratio": ratios,
        "max_abs_weight_difference_between_methods": agree,
        "ridge_norm_lambda_3": ridge3,
        "ridge_path_seed0": path,
    }
    return ReproResult(
        name="d2l_weight_decay",
        title="Weight decay on high-dimensional linear regression",
        source="Zhang, Lipton, Li, Smola — Dive into Deep Learning, §3.7 Weight Decay",
        setup="d=200 features, 20 training and 100 test points, y = 0.05 + Σ 0.01·x_i + N(0, 0.01²); "
        "linear model, w ~ N(0, 1), SGD with batch size 1, lr 0.003, 100 epochs, loss (ŷ−y)²/2 + λ/2·‖w‖², "
        f"λ ∈ {{0, 3}}, {n_seeds} seeds (data, initialisation and batch order all change with the seed).",
        published=published,
        checks=checks,
        diagnosis=diagnosis,
        tables=tables,
        plots=plots,
        metrics=metrics,
    )


RECIPE = Repro(
    name="d2l_weight_decay",
    title="Weight decay on high-dimensional linear regression (D2L §3.7)",
    order=10,
    run=run,
    requires=("reglab.penalties",),
)
