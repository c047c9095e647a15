"""Sweeps: search-space parsing, the ridge acceptance check, exact budgets, backends, CLI, report."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
import torch

from reglab.cli import main
from reglab.sweep import (
    RECIPES,
    SURPLUS,
    ParamSpec,
    _make_objective,
    closed_form_ridge,
    load_sweep,
    parse_param,
    ridge_validation_curve,
    sweep,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
WD = ["weight_decay=log:1e-3..1e2"]


# --- search space ------------------------------------------------------------------------------
def test_parse_param_forms():
    assert parse_param("weight_decay=log:1e-5..1") == ParamSpec("weight_decay", 1e-5, 1.0, log=True)
    assert parse_param("dropout=0..0.6") == ParamSpec("dropout", 0.0, 0.6)
    assert parse_param("patience=int:3..20") == ParamSpec("patience", 3, 20, kind="int")
    spec = parse_param("label_smoothing=0,0.1,0.2")
    assert spec.kind == "categorical" and spec.choices == (0, 0.1, 0.2)
    assert parse_param(spec.to_text()) == spec
    assert parse_param(parse_param("weight_decay=log:1e-5..1").to_text()).log


@pytest.mark.parametrize(
    "text, match",
    [
        ("weight_decay", "name=low..high"),
        ("weight_decay=log:0..1", "low > 0"),
        ("dropout=0.6..0.1", "low must be < high"),
        ("dropout=a..b", "two numbers"),
        ("x y=1..2", "identifier"),
    ],
)
def test_parse_param_rejects_bad_text(text, match):
    with pytest.raises(ValueError, match=match):
        parse_param(text)


# --- closed form and the acceptance check --------------------------------------------------------
def test_closed_form_ridge_is_a_stationary_point():
    """Independent check: the gradient of mean((xw+b−y)²) + λ/2‖w‖² vanishes at the solution."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(15, 30, generator=g, dtype=torch.float64), torch.randn(15, 1, generator=g, dtype=torch.float64)
    for lam in (0.01, 1.0, 30.0):
        w, b = closed_form_ridge(x, y, lam)
        w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
        obj = (x @ w + b - y).pow(2).mean() + lam / 2 * w.pow(2).sum()
        gw, gb = torch.autograd.grad(obj, (w, b))
        assert gw.abs().max() < 1e-9 and gb.abs().max() < 1e-9
    with pytest.raises(ValueError, match="lam=-1"):
        closed_form_ridge(x, y, -1)


def test_regression_sweep_finds_lambda_within_10_percent_of_ridge_optimum(tmp_path):
    curve = ridge_validation_curve(np.logspace(-3, 3, 121))
    optimum = min(v for _, v in curve)
    result = sweep("regression", WD, trials=16, storage="memory", seed=0, out=tmp_path)
    best_lam = result.best_params["weight_decay"]
    # the trained model at the best λ reaches the closed-form ridge optimum within 10 %
    assert result.best_value <= 1.10 * optimum
    # and the closed-form solution at that λ is itself within 10 % of the optimum
    (_, at_best), = ridge_validation_curve([best_lam])
    assert at_best <= 1.10 * optimum
    # an unregularized-ish point is far worse: the sweep had something to find
    worst = max(r["value"] for r in result.trials() if r["state"] == "COMPLETE")
    assert worst > 10 * optimum
    states = {r["state"] for r in result.trials()}
    assert "PRUNED" in states  # hopeless trials were stopped at an epoch boundary
    pruned = [r for r in result.trials() if r["state"] == "PRUNED"]
    assert all(r["epochs"] < RECIPES["regression"].defaults["epochs"] for r in pruned)


# --- backends -------------------------------------------------------------------------------------
def test_batched_backend_equals_sequential_recipe_runs():
    rec = RECIPES["regression"]
    cfg = rec.config({"epochs": 8})
    lams = [0.0, 1.0, 20.0]
    seq_rows = []
    for lam in lams:
        seq_rows.append(rec.run({"weight_decay": lam}, cfg, lambda row: None))
    epochs_seen = []
    batched_rows = rec.run_batched([{"weight_decay": lam} for lam in lams], cfg, lambda rows: epochs_seen.append(len(rows)))
    assert epochs_seen == [3] * 8
    for a, b in zip(seq_rows, batched_rows):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6)


def test_batched_sweep_runs_trials_in_rounds(tmp_path):
    result = sweep("regression", WD, trials=6, storage="memory", seed=1, backend="batched", batch=4, pruner="none",
                   config={"epochs": 10}, out=tmp_path)
    rows = result.trials()
    assert len(rows) == 6 and all(r["state"] == "COMPLETE" for r in rows)
    assert all(len(r["curve"]) == 10 for r in rows)


def test_digits_recipe_sequential_and_batched(tmp_path):
    cfg = {"epochs": 2, "n_train": 64, "n_val": 64, "hidden": 16}
    seq = sweep("digits", ["weight_decay=log:1e-3..1", "dropout=0..0.5"], trials=2, storage="memory", seed=0,
                config=cfg, pruner="none", out=tmp_path)
    assert [r["state"] for r in seq.trials()] == ["COMPLETE", "COMPLETE"]
    bat = sweep("digits", ["label_smoothing=0..0.3", "dropout=0..0.5"], trials=3, storage="memory", seed=0, config=cfg,
                backend="batched", batch=3, pruner="none", out=tmp_path)
    assert all(math.isfinite(r["value"]) for r in bat.trials())


# --- storage, budget, resume ------------------------------------------------------------------------
def test_default_sqlite_storage_resumes_to_an_exact_budget(tmp_path):
    cfg = {"epochs": 5}
    first = sweep("regression", WD, trials=3, out=tmp_path, seed=0, config=cfg)
    assert (tmp_path / "sweep.db").exists()
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["storage"].startswith("sqlite:///") and len(saved["trials"]) == 3
    first_params = [r["params"] for r in first.trials()]
    # running the same command again with a larger budget continues the same study
    second = sweep("regression", WD, trials=5, out=tmp_path, seed=1, config=cfg)
    assert len(second.trials()) == 5
    assert [r["params"] for r in second.trials()[:3]] == first_params
    again = load_sweep(f"sqlite:///{tmp_path / 'sweep.db'}", "regression")
    assert len(again.trials()) == 5 and again.recipe == "regression"
    with pytest.raises(ValueError, match="params"):
        sweep("regression", ["weight_decay=0..1"], trials=5, out=tmp_path, config=cfg)


def test_trial_beyond_the_budget_is_marked_surplus_and_not_run():
    study = optuna.create_study()
    rec = RECIPES["regression"]
    specs = [parse_param(WD[0])]
    objective = _make_objective(rec, specs, rec.config({"epochs": 2}), "val_loss", 2)
    study.optimize(objective, n_trials=2)
    extra = study.ask()
    with pytest.raises(optuna.TrialPruned, match="surplus"):
        objective(extra)
    assert study.trials[-1].user_attrs.get(SURPLUS) and "curve" not in study.trials[-1].user_attrs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"recipe": "nope"}, "recipe='nope'"),
        ({"trials": 0}, "trials=0"),
        ({"backend": "gpu"}, "backend='gpu'"),
        ({"params": ["lr=log:1e-3..1"], "backend": "batched"}, "batched"),
        ({"params": ["momentum=0..1"]}, "momentum"),
        ({"config": {"epochz": 3}}, "epochz"),
        ({"pruner": "asha"}, "pruner='asha'"),
        ({"grace_period": 1, "heartbeat_interval": 2}, "grace_period"),
    ],
)
def test_bad_sweep_arguments_name_the_value(kwargs, match):
    args = {"recipe": "regression", "params": WD, "trials": 2, "storage": "memory"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sweep(args.pop("recipe"), args.pop("params"), **args)


# --- CLI and report ----------------------------------------------------------------------------------
def test_cli_sweep_then_report(tmp_path, capsys):
    out = tmp_path / "sw"
    rc = main(["sweep", "regression", "--param", "weight_decay=log:1e-2..1e2", "--trials", "6", "--set", "epochs=20",
               "--out", str(out), "--seed", "0", "-q", "--pruner", "none"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "best: weight_decay=" in text
    html = (out / "report.html").read_text()
    assert "underfitting side" in html and "overfitting side" in html
    assert "data:image/svg+xml;base64," in html and "<script" not in html
    assert 'class="best"' in html
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").exists()


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "regression", "--param", "weight_decay=log:0..1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error:") and "low > 0" in err and "\n" not in err
    assert main(["sweep", "nope", "--param", "x=0..1"]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err
    assert main(["sweep", "regression", "--out", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "PATH" in capsys.readouterr().err


def test_report_escapes_and_labels_regimes(tmp_path):
    import dataclasses

    from reglab.report.sweep import regimes, sweep_report_html
    from reglab.sweep import register_recipe

    register_recipe(dataclasses.replace(RECIPES["regression"], name="r<&>"))
    try:
        result = sweep("r<&>", WD, trials=5, storage="memory", seed=0, config={"epochs": 15}, pruner="none", out=tmp_path)
    finally:
        RECIPES.pop("r<&>")
    html = sweep_report_html(result)
    assert "r&lt;&amp;&gt;" in html and "r<&>" not in html
    assert "Best weight_decay" in html and "data:image/svg+xml;base64," in html
    labels = regimes(result.trials())
    assert set(labels.values()) <= {"underfitting", "good_fit", "overfitting", "insufficient_data"}
    with pytest.raises(ValueError, match="x='lr'"):
        sweep_report_html(result, x="lr")
