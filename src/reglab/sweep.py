"""Sweeps of regularization strength on Optuna: SQLite by default, PostgreSQL for many workers.

A sweep runs one *recipe* many times with different strengths and keeps the validation score
of each run in an Optuna study (Akiba et al., 2019, "Optuna: A Next-generation Hyperparameter
Optimization Framework"). Recipes report their validation metric after every epoch, so hopeless
trials are pruned at epoch boundaries (median pruning by default): the sweep-level form of early
stopping.

Storage:

* default: a SQLite file ``OUT/sweep.db`` next to the results (``sqlite:///OUT/sweep.db``);
* scale-out: the *same* call (or ``reglab sweep`` command) with a PostgreSQL URL, e.g.
  ``postgresql://user:password@host:5432/db``, started on several machines or processes with the
  same ``study`` name; each process is a worker of the one study;
* ``"memory"``: an in-process study (tests, notebooks).

Failed workers. With a database storage every running trial writes a heartbeat every
``heartbeat_interval`` seconds; a trial whose heartbeat is older than ``grace_period`` seconds
(its worker was killed or lost) is marked failed by the next worker that looks, and
``optuna.storages.RetryHeartbeatStaleTrialCallback`` (formerly ``RetryFailedTrialCallback``)
re-queues it with the same parameters. The trial budget is exact: ``trials=N`` ends with N
finished trials (complete, or pruned by the pruner), whatever the number of workers. A worker
only starts a trial while fewer than N trials are finished, running or queued; a trial that
several workers started at the same moment and that would exceed N (it sees N live trials with
lower numbers) is closed at once as *surplus* (state PRUNED, user attribute ``reglab_surplus``),
never run, and left out of every count and report.

Recipes (see :data:`RECIPES`, extend with :func:`register_recipe`):

* ``regression``: the high-dimensional linear regression of Dive into Deep Learning 3.7
  (``reglab.data.make_high_dim_regression``: 20 examples, 200 features), a linear model
  initialised ``N(0, 1)`` and trained by minibatch SGD; ``weight_decay=λ`` is SGD's
  ``weight_decay`` on the weights (gradient ``λ·w``, i.e. ``l2=λ`` adds ``λ/2·Σw²``; for plain SGD
  this is the same update as decoupled ``w ← w − lr·λ·w``). Its held-out split is the
  validation set. Depends only on torch and ``reglab.fit``.
* ``digits``: the demo MLP on noisy digits (``reglab.recipes.digits``), sweeping ``l2``,
  ``weight_decay`` (decoupled, AdamW convention), ``dropout``, ``label_smoothing``, ``patience``.

Backends: ``"sequential"`` trains one trial at a time (any parameter, heartbeats, many
workers); ``"batched"`` asks Optuna for ``batch`` trials at once and trains them together with
:class:`reglab.batched.BatchedPath` (per-copy strengths only; one process).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "ParamSpec",
    "RECIPES",
    "Recipe",
    "SweepResult",
    "closed_form_ridge",
    "load_sweep",
    "open_study",
    "parse_param",
    "register_recipe",
    "ridge_validation_curve",
    "sweep",
]

SURPLUS = "reglab_surplus"


# ------------------------------------------------------------------------------------------
# search space
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamSpec:
    """One swept parameter: a float or int range (optionally log-scaled) or a list of choices.

    Written on the command line as ``name=low..high`` (uniform float), ``name=log:low..high``
    (log-uniform float), ``name=int:low..high`` (integer), or ``name=a,b,c`` (choices).

    Raises:
        ValueError: for ``low >= high``, a log range with ``low <= 0``, an unknown ``kind``, or
            empty choices.
    """

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"name must be an identifier; received name={self.name!r}")
        if self.kind not in ("float", "int", "categorical"):
            raise ValueError(f"kind must be 'float', 'int' or 'categorical'; received kind={self.kind!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"choices must not be empty for {self.name}; received choices={self.choices!r}")
            return
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"{self.name} needs finite low and high; received low={self.low!r}, high={self.high!r}")
        if not self.low < self.high:
            raise ValueError(f"{self.name}: low must be < high; received low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"{self.name}: a log range needs low > 0; received low={self.low!r}")

    def distribution(self) -> Any:
        import optuna

        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(float(self.low), float(self.high), log=self.log)

    def suggest(self, trial: Any) -> Any:
        """Ask ``trial`` (an ``optuna.Trial``) for a value of this parameter."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def to_text(self) -> str:
        if self.kind == "categorical":
            return f"{self.name}=" + ",".join(map(str, self.choices))
        prefix = "int:" if self.kind == "int" else ("log:" if self.log else "")
        if self.kind == "int" and self.log:
            prefix = "intlog:"
        return f"{self.name}={prefix}{self.low:g}..{self.high:g}"


def _number(text: str) -> float | int | str:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and not any(c in text.lower() for c in ".e") else value


def parse_param(text: str) -> ParamSpec:
    """Parse ``name=log:1e-5..1``, ``name=0..0.6``, ``name=int:1..20`` or ``name=a,b,c``.

    Raises:
        ValueError: naming the text when it does not follow one of these forms.

    Example:
        >>> parse_param("weight_decay=log:1e-5..1")
        ParamSpec(name='weight_decay', low=1e-05, high=1.0, log=True, kind='float', choices=())
    """
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"param must look like name=low..high or name=log:low..high; received param={text!r}")
    name, _, rhs = text.partition("=")
    name, rhs = name.strip(), rhs.strip()
    kind, log = "float", False
    for prefix, k, lg in (("log:", "float", True), ("intlog:", "int", True), ("int:", "int", False)):
        if rhs.startswith(prefix):
            kind, log, rhs = k, lg, rhs[len(prefix) :]
            break
    if ".." in rhs:
        lo, _, hi = rhs.partition("..")
        try:
            low, high = float(lo), float(hi)
        except ValueError:
            raise ValueError(f"param range must be two numbers low..high; received param={text!r}") from None
        return ParamSpec(name, low, high, log=log, kind=kind)
    if kind != "float" or log:
        raise ValueError(f"param with a {kind}/log prefix needs a range low..high; received param={text!r}")
    choices = tuple(_number(c.strip()) for c in rhs.split(",") if c.strip())
    if len(choices) < 1:
        raise ValueError(f"param must look like name=low..high or name=a,b,c; received param={text!r}")
    return ParamSpec(name, kind="categorical", choices=choices)


def _to_specs(params: Sequence[str | ParamSpec] | Mapping[str, Any]) -> list[ParamSpec]:
    if isinstance(params, Mapping):
        items: list[str | ParamSpec] = [f"{k}={v}" if isinstance(v, str) else v for k, v in params.items()]
    else:
        items = list(params)
    specs = [parse_param(p) if isinstance(p, str) else p for p in items]
    if not specs:
        raise ValueError("params must name at least one parameter to sweep; received params=[]")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"params must not repeat a name; received names={names}")
    for s in specs:
        if not isinstance(s, ParamSpec):
            raise ValueError(f"params must be strings or ParamSpec; received {s!r}")
    return specs


# ------------------------------------------------------------------------------------------
# recipes
# ------------------------------------------------------------------------------------------
EpochCallback = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True)
class Recipe:
    """A sweepable experiment.

    Attributes:
        name: registry key (``reglab sweep NAME``).
        description: one line for help texts and reports.
        params: names of the parameters it accepts.
        defaults: its configuration (overridable per sweep with ``config``).
        run: ``run(params, config, on_epoch) -> final_row``; calls ``on_epoch(row)`` after every
            epoch with a row holding at least ``train_loss`` and ``val_loss`` (``on_epoch`` may
            raise ``optuna.TrialPruned`` to stop the run).
        run_batched: ``run_batched(list_of_params, config, on_epoch) -> final_rows`` training
            several parameter sets at once (``on_epoch`` gets one row per set), or ``None``.
        batched_params: the parameters ``run_batched`` can vary per copy.
        strength: the parameter drawn on the x axis of the U-curve by default.
    """

    name: str
    description: str
    params: tuple[str, ...]
    defaults: Mapping[str, Any]
    run: Callable[[Mapping[str, Any], Mapping[str, Any], EpochCallback], Mapping[str, Any]]
    run_batched: Callable[[list[Mapping[str, Any]], Mapping[str, Any], Callable[[list[Mapping[str, Any]]], None]], list[Mapping[str, Any]]] | None = None
    batched_params: tuple[str, ...] = ()
    strength: str = "weight_decay"

    def config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated with ``overrides``; unknown keys raise ``ValueError``."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown config key(s) {unknown} for recipe {self.name!r}; known keys are {sorted(self.defaults)}"
            )
        cfg = dict(self.defaults)
        for key, value in overrides.items():
            default = self.defaults[key]
            if isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            elif isinstance(default, int) and not isinstance(value, bool):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            cfg[key] = value
        return cfg


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add (or replace) a recipe in :data:`RECIPES` and return it."""
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a reglab.sweep.Recipe; received recipe={recipe!r}")
    RECIPES[recipe.name] = recipe
    return recipe


# --- regression (D2L 3.7) ------------------------------------------------------------------
_REGRESSION_DEFAULTS: dict[str, Any] = {
    "n_train": 20,
    "n_val": 100,
    "dim": 200,
    "noise_std": 0.01,
    "data_seed": 0,
    "seed": 0,
    "epochs": 100,
    "batch_size": 5,
    "lr": 0.003,
    "init_std": 1.0,
}


def _regression_data(cfg: Mapping[str, Any]):
    from reglab.data import make_high_dim_regression

    return make_high_dim_regression(
        n_train=cfg["n_train"], n_test=cfg["n_val"], dim=cfg["dim"], noise_std=cfg["noise_std"], seed=cfg["data_seed"]
    )


def _linear_model(dim: int, init_std: float) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        model = nn.Linear(dim, 1)
        with torch.no_grad():
            model.weight.normal_(0.0, init_std)
            model.bias.zero_()
        return model

    return make


def _regression_run(params: Mapping[str, Any], cfg: Mapping[str, Any], on_epoch: EpochCallback) -> Mapping[str, Any]:
    from reglab.data import TensorLoader
    from reglab.loop import fit

    data = _regression_data(cfg)
    lam = float(params.get("weight_decay", 0.0))
    lr = float(params.get("lr", cfg["lr"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = _linear_model(cfg["dim"], cfg["init_std"])()
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "weight_decay": lam}, {"params": [model.bias], "weight_decay": 0.0}], lr=lr
    )
    big = 1 << 20
    history = fit(
        model,
        TensorLoader(data.train.x, data.train.y, batch_size=cfg["batch_size"], shuffle=True, seed=cfg["seed"]),
        optimizer=optimizer,
        loss_fn=nn.functional.mse_loss,
        epochs=cfg["epochs"],
        eval_sets={"val": TensorLoader(data.test.x, data.test.y, batch_size=big)},
        eval_train=TensorLoader(data.train.x, data.train.y, batch_size=big),
        progress=lambda state: on_epoch(state.history.last),
    )
    return history.last


def _regression_run_batched(
    param_sets: list[Mapping[str, Any]], cfg: Mapping[str, Any], on_epoch: Callable[[list[Mapping[str, Any]]], None]
) -> list[Mapping[str, Any]]:
    from reglab.batched import BatchedPath
    from reglab.data import TensorLoader

    data = _regression_data(cfg)
    path = BatchedPath(
        _linear_model(cfg["dim"], cfg["init_std"]),
        seeds=[cfg["seed"]] * len(param_sets),
        l2=[float(p.get("weight_decay", 0.0)) for p in param_sets],  # SGD weight_decay = coupled λ·w
        optimizer="sgd",
        lr=cfg["lr"],
        loss="mse",
    )
    big = 1 << 20
    histories = path.fit(
        TensorLoader(data.train.x, data.train.y, batch_size=cfg["batch_size"], shuffle=True, seed=cfg["seed"]),
        epochs=cfg["epochs"],
        eval_sets={"val": TensorLoader(data.test.x, data.test.y, batch_size=big)},
        eval_train=TensorLoader(data.train.x, data.train.y, batch_size=big),
        on_epoch=on_epoch,
    )
    return [h.last for h in histories]


register_recipe(
    Recipe(
        name="regression",
        description="D2L 3.7 high-dimensional linear regression (20 examples, 200 features), SGD, weight decay",
        params=("weight_decay", "lr"),
        defaults=_REGRESSION_DEFAULTS,
        run=_regression_run,
        run_batched=_regression_run_batched,
        batched_params=("weight_decay",),
        strength="weight_decay",
    )
)


def closed_form_ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact minimiser of ``mean((x·w + b − y)²) + λ/2·‖w‖²`` (the bias is not penalised).

    With centred ``xc, yc``: ``w = (xcᵀxc + n·λ/2·I)⁻¹ xcᵀyc``, ``b = ȳ − x̄ᵀw``; computed in
    float64. This is the ``l2=λ`` convention (``λ/2·Σw²``) on the mean-squared error the
    ``regression`` recipe trains on.

    Returns:
        ``(w, b)`` with shapes ``(d, 1)`` and ``(1,)``.

    Raises:
        ValueError: for ``lam < 0``.
    """
    if not (isinstance(lam, (int, float)) and lam >= 0):
        raise ValueError(f"lam must be a number >= 0; received lam={lam!r}")
    x, y = x.double(), y.double().reshape(x.shape[0], -1)
    n, d = x.shape
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    w = torch.linalg.lstsq(xc.T @ xc + (n * lam / 2) * torch.eye(d, dtype=x.dtype), xc.T @ yc).solution
    b = ym - xm @ w
    return w, b


def ridge_validation_curve(
    lambdas: Sequence[float], config: Mapping[str, Any] | None = None
) -> list[tuple[float, float]]:
    """``(λ, validation MSE of the closed-form ridge solution)`` on the ``regression`` recipe's data."""
    cfg = RECIPES["regression"].config(config)
    data = _regression_data(cfg)
    out = []
    for lam in lambdas:
        w, b = closed_form_ridge(data.train.x, data.train.y, float(lam))
        pred = data.test.x.double() @ w + b
        out.append((float(lam), float((pred - data.test.y.double()).pow(2).mean())))
    return out


# --- digits (the demo MLP) -------------------------------------------------------------------
_DIGITS_DEFAULTS: dict[str, Any] = {
    "noise": 0.2,
    "epochs": 30,
    "n_train": 400,
    "n_val": 300,
    "hidden": 256,
    "batch_size": 32,
    "lr": 1e-3,
    "seed": 0,
}


def _digits_setup(cfg: Mapping[str, Any]):
    from reglab.data import load_digits
    from reglab.recipes.digits import DemoConfig

    config = DemoConfig(
        settings=("none",),
        seeds=1,
        noise=cfg["noise"],
        epochs=cfg["epochs"],
        n_train=cfg["n_train"],
        n_val=cfg["n_val"],
        hidden=cfg["hidden"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
    ).validate()
    data = load_digits(n_train=cfg["n_train"], n_val=cfg["n_val"], noise=cfg["noise"], seed=cfg["seed"])
    return config, data


def _digits_run(params: Mapping[str, Any], cfg: Mapping[str, Any], on_epoch: EpochCallback) -> Mapping[str, Any]:
    from reglab.data import TensorLoader
    from reglab.loop import fit
    from reglab.recipes.digits import Setting, build

    config, data = _digits_setup(cfg)
    patience = params.get("patience")
    setting = Setting(
        name="sweep",
        title="sweep point",
        l2=float(params.get("l2", 0.0)),
        weight_decay=float(params.get("weight_decay", 0.0)),
        dropout=float(params.get("dropout", 0.0)),
        label_smoothing=float(params.get("label_smoothing", 0.0)),
        patience=None if patience is None else int(patience),
    )
    with torch.random.fork_rng(devices=[]):
        model, optimizer, loss_fn, _ = build(setting, cfg["seed"], config)
        callbacks: list[Any] = []
        if setting.l2:
            from reglab.penalties import Penalty

            callbacks.append(Penalty(l2=setting.l2).callback(model))
        if setting.patience is not None:
            from reglab.stopping import EarlyStopping

            callbacks.append(EarlyStopping(monitor="val_loss", patience=setting.patience, restore_best=True))
        big = 4096
        history = fit(
            model,
            TensorLoader(data.train.x, data.train.y, batch_size=config.batch_size, shuffle=True, seed=cfg["seed"]),
            optimizer=optimizer,
            loss_fn=loss_fn,
            eval_loss_fn=nn.functional.cross_entropy,
            epochs=config.epochs,
            eval_sets={"val": TensorLoader(data.val.x, data.val.y, batch_size=big)},
            eval_train=TensorLoader(data.train.x, data.train.y, batch_size=big),
            callbacks=callbacks,
            progress=lambda state: on_epoch(state.history.last),
        )
    return history.last


def _digits_run_batched(
    param_sets: list[Mapping[str, Any]], cfg: Mapping[str, Any], on_epoch: Callable[[list[Mapping[str, Any]]], None]
) -> list[Mapping[str, Any]]:
    from reglab.batched import BatchedPath
    from reglab.data import TensorLoader
    from reglab.recipes.digits import make_model

    config, data = _digits_setup(cfg)
    path = BatchedPath(
        lambda: make_model(config.hidden, 0.0),
        seeds=[cfg["seed"]] * len(param_sets),
        weight_decay=[float(p.get("weight_decay", 0.0)) for p in param_sets],
        l2=[float(p.get("l2", 0.0)) for p in param_sets],
        dropout=[float(p.get("dropout", 0.0)) for p in param_sets],
        label_smoothing=[float(p.get("label_smoothing", 0.0)) for p in param_sets],
        optimizer="adam",
        lr=config.lr,
    )
    big = 4096
    histories = path.fit(
        TensorLoader(data.train.x, data.train.y, batch_size=config.batch_size, shuffle=True, seed=cfg["seed"]),
        epochs=config.epochs,
        eval_sets={"val": TensorLoader(data.val.x, data.val.y, batch_size=big)},
        eval_train=TensorLoader(data.train.x, data.train.y, batch_size=big),
        on_epoch=on_epoch,
    )
    return [h.last for h in histories]


register_recipe(
    Recipe(
        name="digits",
        description="The demo MLP on noisy digits (reglab.recipes.digits), Adam",
        params=("l2", "weight_decay", "dropout", "label_smoothing", "patience"),
        defaults=_DIGITS_DEFAULTS,
        run=_digits_run,
        run_batched=_digits_run_batched,
        batched_params=("l2", "weight_decay", "dropout", "label_smoothing"),
        strength="weight_decay",
    )
)


# ------------------------------------------------------------------------------------------
# studies
# ------------------------------------------------------------------------------------------
def _retry_callback(max_retry: int | None) -> Any:
    import optuna

    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    return cls(max_retry=max_retry)


def _make_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> Any:
    import optuna

    if url == "memory":
        return optuna.storages.InMemoryStorage()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=_retry_callback(3) if heartbeat_interval else None,
        )


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be an int >= {minimum}; received {name}={value!r}")


def _default_storage(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(out / 'sweep.db').resolve()}"


def open_study(
    recipe: str,
    params: Sequence[str | ParamSpec] | Mapping[str, Any],
    *,
    storage: str | None = None,
    study: str | None = None,
    out: str | os.PathLike = "runs/sweep",
    metric: str = "val_loss",
    direction: str | None = None,
    config: Mapping[str, Any] | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = None,
    heartbeat_interval: int = 10,
    grace_period: int = 30,
) -> Any:
    """Create the Optuna study of a sweep, or join it if it exists; returns the ``optuna.Study``.

    The recipe, search space, metric and configuration are stored in the study's user
    attributes, so workers and ``reglab report`` agree on them; joining a study created with a
    different recipe, search space or metric raises ``ValueError``. Arguments as in :func:`sweep`.
    """
    import optuna

    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}; received recipe={recipe!r}")
    rec = RECIPES[recipe]
    specs = _to_specs(params)
    unknown = [s.name for s in specs if s.name not in rec.params]
    if unknown:
        raise ValueError(f"recipe {recipe!r} cannot sweep {unknown}; it accepts {list(rec.params)}")
    cfg = rec.config(config)
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric must be a column name such as 'val_loss'; received metric={metric!r}")
    direction = direction or ("maximize" if metric.endswith("acc") else "minimize")
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize'; received direction={direction!r}")
    if sampler not in ("tpe", "random"):
        raise ValueError(f"sampler must be 'tpe' or 'random'; received sampler={sampler!r}")
    if pruner not in ("median", "hyperband", "none"):
        raise ValueError(f"pruner must be 'median', 'hyperband' or 'none'; received pruner={pruner!r}")
    if seed is not None:
        _check_int("seed", seed, 0)
    _check_int("heartbeat_interval", heartbeat_interval, 1)
    _check_int("grace_period", grace_period, 1)
    if grace_period <= heartbeat_interval:
        raise ValueError(
            f"grace_period must exceed heartbeat_interval; received grace_period={grace_period}, "
            f"heartbeat_interval={heartbeat_interval}"
        )
    url = storage or _default_storage(Path(out))
    store = _make_storage(url, heartbeat_interval, grace_period)
    name = study or recipe
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, cfg.get("epochs", 10) // 10)),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.get("epochs", 100)),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    meta = {
        "recipe": recipe,
        "params": [s.to_text() for s in specs],
        "metric": metric,
        "config": cfg,
        "strength": rec.strength if rec.strength in [s.name for s in specs] else specs[0].name,
    }
    for attempt in range(3):
        try:
            st = optuna.create_study(
                storage=store,
                study_name=name,
                direction=direction,
                sampler=samplers[sampler](),
                pruner=pruners[pruner](),
                load_if_exists=True,
            )
            break
        except Exception as exc:  # concurrent creation by another worker: retry the lookup
            if attempt == 2 or type(exc).__name__ not in ("IntegrityError", "DuplicatedStudyError", "OperationalError"):
                raise
            time.sleep(0.5 + attempt)
    existing = st.user_attrs.get("reglab")
    if existing is None:
        st.set_user_attr("reglab", meta)
    else:
        for key in ("recipe", "params", "metric"):
            if existing.get(key) != meta[key]:
                raise ValueError(
                    f"study {name!r} in {url} was created with {key}={existing.get(key)!r}; "
                    f"received {key}={meta[key]!r}"
                )
    if st.direction.name.lower() != direction:
        raise ValueError(f"study {name!r} optimizes {st.direction.name.lower()}; received direction={direction!r}")
    st._reglab_url = url  # type: ignore[attr-defined]
    return st


def _counts(trials: Sequence[Any]) -> dict[str, int]:
    from optuna.trial import TrialState

    c = {"finished": 0, "running": 0, "waiting": 0}
    for t in trials:
        if t.user_attrs.get(SURPLUS):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            c["finished"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
    return c


def _in_budget(trial: Any, n_trials: int) -> bool:
    """True when fewer than ``n_trials`` live trials (finished, running, queued) precede ``trial``."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(
        1
        for t in trial.study.get_trials(deepcopy=False)
        if t.number < trial.number and t.state in live and not t.user_attrs.get(SURPLUS)
    )
    return ahead < n_trials


def _record(trial: Any, curve: list[list[float]], final: Mapping[str, Any] | None) -> None:
    trial.set_user_attr("curve", curve)
    if final is not None:
        for key in ("train_loss", "val_loss", "train_acc", "val_acc"):
            if key in final and isinstance(final[key], (int, float)) and math.isfinite(final[key]):
                trial.set_user_attr(key, float(final[key]))


def _row_value(row: Mapping[str, Any], metric: str) -> float:
    if metric not in row:
        raise ValueError(f"metric {metric!r} is not reported by the recipe; its columns are {sorted(row)}")
    return float(row[metric])


def _worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _make_objective(rec: Recipe, specs: list[ParamSpec], cfg: Mapping[str, Any], metric: str, n_trials: int):
    import optuna

    def objective(trial: Any) -> float:
        if not _in_budget(trial, n_trials):
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned("surplus trial: the study already has its trials")
        trial.set_user_attr("worker", _worker_label())
        values = {s.name: s.suggest(trial) for s in specs}
        curve: list[list[float]] = []

        def on_epoch(row: Mapping[str, Any]) -> None:
            epoch = int(row["epoch"])
            curve.append([epoch, float(row.get("train_loss", math.nan)), float(row.get("val_loss", math.nan))])
            value = _row_value(row, metric)
            trial.report(value, epoch)
            if trial.should_prune():
                _record(trial, curve, row)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric}={value:.4g})")

        final = rec.run(values, cfg, on_epoch)
        _record(trial, curve, final)
        value = _row_value(final, metric)
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{metric} is not finite ({value})")
        return value

    return objective


def _fail_stale(study: Any) -> None:
    import optuna

    storage = study._storage
    if getattr(storage, "heartbeat_interval", None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)


def _run_sequential(study: Any, rec: Recipe, specs, cfg, metric: str, n_trials: int, poll: float, on_trial) -> None:
    objective = _make_objective(rec, specs, cfg, metric, n_trials)
    while True:
        _fail_stale(study)
        c = _counts(study.get_trials(deepcopy=False))
        if c["finished"] >= n_trials:
            return
        if c["finished"] + c["running"] + c["waiting"] >= n_trials and c["waiting"] == 0:
            time.sleep(poll)  # others hold the rest of the budget; a stale one will be re-queued
            continue
        study.optimize(
            objective,
            n_trials=1,
            gc_after_trial=False,
            show_progress_bar=False,
            callbacks=[lambda s, t: on_trial(t)] if on_trial else None,
        )


def _run_batched(study: Any, rec: Recipe, specs, cfg, metric: str, n_trials: int, batch: int, poll: float, on_trial) -> None:
    from optuna.trial import TrialState

    storage = study._storage
    heartbeat = getattr(storage, "heartbeat_interval", None)
    while True:
        _fail_stale(study)
        c = _counts(study.get_trials(deepcopy=False))
        if c["finished"] >= n_trials:
            return
        room = n_trials - (c["finished"] + c["running"])
        if room <= 0:
            time.sleep(poll)
            continue
        trials, values = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "heartbeat is supposed to be used with optimize": we beat by hand
            for _ in range(min(batch, room)):
                t = study.ask()
                if heartbeat:
                    storage.record_heartbeat(t._trial_id)
                if not _in_budget(t, n_trials):
                    t.set_user_attr(SURPLUS, True)
                    study.tell(t, state=TrialState.PRUNED)
                    continue
                t.set_user_attr("worker", _worker_label())
                trials.append(t)
                values.append({s.name: s.suggest(t) for s in specs})
        if not trials:
            continue
        curves: list[list[list[float]]] = [[] for _ in trials]
        pruned = [False] * len(trials)

        def on_epoch(rows: list[Mapping[str, Any]]) -> None:
            for i, (t, row) in enumerate(zip(trials, rows)):
                if heartbeat:
                    storage.record_heartbeat(t._trial_id)
                if pruned[i]:
                    continue
                epoch = int(row["epoch"])
                curves[i].append([epoch, float(row.get("train_loss", math.nan)), float(row.get("val_loss", math.nan))])
                t.report(_row_value(row, metric), epoch)
                if t.should_prune():
                    pruned[i] = True
                    _record(t, curves[i], row)

        finals = rec.run_batched(values, cfg, on_epoch)  # type: ignore[misc]
        for i, (t, final) in enumerate(zip(trials, finals)):
            if pruned[i]:
                frozen = study.tell(t, state=TrialState.PRUNED)
            else:
                _record(t, curves[i], final)
                value = _row_value(final, metric)
                frozen = study.tell(t, value) if math.isfinite(value) else study.tell(t, state=TrialState.PRUNED)
            if on_trial:
                on_trial(frozen)


@dataclass
class SweepResult:
    """A finished (or partial) sweep read back from its study."""

    study: Any
    recipe: str
    metric: str
    params: list[str]
    config: dict[str, Any]
    strength: str
    storage: str
    seconds: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return self.study.direction.name.lower()

    def trials(self) -> list[dict[str, Any]]:
        """One row per real trial (surplus trials left out), in trial-number order."""
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get(SURPLUS):
                continue
            rows.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "params": dict(t.params),
                    "value": t.value,
                    "train_loss": t.user_attrs.get("train_loss"),
                    "val_loss": t.user_attrs.get("val_loss"),
                    "epochs": len(t.intermediate_values),
                    "curve": t.user_attrs.get("curve", []),
                    "worker": t.user_attrs.get("worker"),
                    "retried_from": t.system_attrs.get("failed_trial"),
                }
            )
        return rows

    @property
    def best_trial(self) -> Any:
        return self.study.best_trial

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.study.best_trial.params)

    @property
    def best_value(self) -> float:
        return float(self.study.best_value)

    def to_dict(self) -> dict[str, Any]:
        complete = [r for r in self.trials() if r["state"] == "COMPLETE"]
        return {
            "recipe": self.recipe,
            "study": self.study.study_name,
            "storage": _redact(self.storage),
            "metric": self.metric,
            "direction": self.direction,
            "params": self.params,
            "strength": self.strength,
            "config": self.config,
            "seconds": self.seconds,
            "best": {"params": self.best_params, "value": self.best_value} if complete else None,
            "trials": self.trials(),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON (the storage password, if any, is left out)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        return path


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def load_sweep(storage: str, study: str) -> SweepResult:
    """Read a sweep back from its storage URL and study name.

    Raises:
        ValueError: if the study was not created by :func:`sweep` (no reglab metadata).
    """
    import optuna

    st = optuna.load_study(study_name=study, storage=_make_storage(storage, None, None))
    meta = st.user_attrs.get("reglab")
    if meta is None:
        raise ValueError(f"study {study!r} in {_redact(storage)} was not created by reglab.sweep (no 'reglab' user attribute)")
    return SweepResult(
        study=st,
        recipe=meta["recipe"],
        metric=meta["metric"],
        params=list(meta["params"]),
        config=dict(meta["config"]),
        strength=meta.get("strength", "weight_decay"),
        storage=storage,
    )


def sweep(
    recipe: str,
    params: Sequence[str | ParamSpec] | Mapping[str, Any],
    *,
    trials: int,
    storage: str | None = None,
    study: str | None = None,
    out: str | os.PathLike = "runs/sweep",
    metric: str = "val_loss",
    direction: str | None = None,
    config: Mapping[str, Any] | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = None,
    backend: str = "sequential",
    batch: int = 8,
    heartbeat_interval: int = 10,
    grace_period: int = 30,
    poll_interval: float = 1.0,
    on_trial: Callable[[Any], None] | None = None,
) -> SweepResult:
    """Tune regularization strength of a recipe with Optuna; returns when the study has ``trials`` trials.

    Run the same call in several processes or on several machines with one PostgreSQL
    ``storage`` URL and one ``study`` name to share the work: each is a worker, the budget of
    ``trials`` finished trials is shared and exact, and trials of killed workers are re-run.

    Args:
        recipe: a key of :data:`RECIPES` (``"regression"``, ``"digits"``).
        params: the search space: strings such as ``"weight_decay=log:1e-5..1"`` and
            ``"dropout=0..0.6"`` (see :func:`parse_param`), :class:`ParamSpec` objects, or a
            mapping ``name -> "log:1e-5..1"``.
        trials: finished trials (complete or pruned) the study must hold at the end (>= 1).
        storage: database URL (``sqlite:///path.db``, ``postgresql://user:pw@host/db``) or
            ``"memory"``; default ``sqlite:///OUT/sweep.db``.
        study: study name (default: the recipe name).
        out: results folder (the default SQLite file and ``sweep.json`` go there).
        metric: the column of the recipe's epoch rows to optimize (``val_loss``, ``val_acc``, ...).
        direction: ``"minimize"``/``"maximize"``; default maximize for ``*acc`` metrics.
        config: recipe configuration overrides (``Recipe.defaults`` lists the keys).
        sampler: ``"tpe"`` (Optuna's default) or ``"random"``.
        pruner: ``"median"`` (prune a trial whose value at an epoch is worse than the median of
            earlier trials at that epoch), ``"hyperband"`` or ``"none"``.
        seed: sampler seed; give each worker of a shared study a different one (or none).
        backend: ``"sequential"`` or ``"batched"`` (``batch`` trials trained at once with
            :class:`reglab.batched.BatchedPath`; only the recipe's ``batched_params``).
        batch: trials per batched round (>= 1).
        heartbeat_interval: seconds between heartbeats of a running trial (database storages).
        grace_period: seconds without a heartbeat after which a trial is failed and re-queued.
        poll_interval: seconds a worker waits while other workers hold the remaining budget.
        on_trial: called with each finished ``optuna.trial.FrozenTrial`` of this worker.

    Returns:
        A :class:`SweepResult` (the study, its trials and best parameters).

    Raises:
        ValueError: for an unknown recipe, parameter, config key, sampler, pruner or backend,
            a malformed range, ``trials < 1``, or a study created with a different search space.

    Example:
        >>> result = sweep("regression", ["weight_decay=log:1e-3..1e2"], trials=4, storage="memory",
        ...                config={"epochs": 5}, seed=0)
        >>> sorted(result.best_params)
        ['weight_decay']
    """
    _check_int("trials", trials, 1)
    if backend not in ("sequential", "batched"):
        raise ValueError(f"backend must be 'sequential' or 'batched'; received backend={backend!r}")
    _check_int("batch", batch, 1)
    if not (isinstance(poll_interval, (int, float)) and poll_interval > 0):
        raise ValueError(f"poll_interval must be > 0; received poll_interval={poll_interval!r}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}; received recipe={recipe!r}")
    rec = RECIPES[recipe]
    specs = _to_specs(params)
    if backend == "batched":
        if rec.run_batched is None:
            raise ValueError(f"recipe {recipe!r} has no batched backend; received backend='batched'")
        bad = [s.name for s in specs if s.name not in rec.batched_params]
        if bad:
            raise ValueError(
                f"backend='batched' varies only {list(rec.batched_params)} per copy for recipe {recipe!r}; "
                f"received params {bad}"
            )
    st = open_study(
        recipe,
        specs,
        storage=storage,
        study=study,
        out=out,
        metric=metric,
        direction=direction,
        config=config,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
    )
    cfg = rec.config(config)
    t0 = time.perf_counter()
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if backend == "sequential":
            _run_sequential(st, rec, specs, cfg, metric, trials, poll_interval, on_trial)
        else:
            _run_batched(st, rec, specs, cfg, metric, trials, batch, poll_interval, on_trial)
    meta = st.user_attrs["reglab"]
    result = SweepResult(
        study=st,
        recipe=recipe,
        metric=metric,
        params=list(meta["params"]),
        config=dict(meta["config"]),
        strength=meta["strength"],
        storage=st._reglab_url,
        seconds=time.perf_counter() - t0,
    )
    if storage != "memory":
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        result.save(out_dir / "sweep.json")
    return result
