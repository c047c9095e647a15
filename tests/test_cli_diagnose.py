import json
import math

import pytest

from reglab.cli import main
from reglab.loop import History


def _overfit_curves(n=40):
    train = [2.0 * 0.85**e for e in range(n)]
    val = [max(2.0 * 0.85**e, 0.6) + 0.03 * max(0, e - 12) for e in range(n)]
    return train, val


def test_diagnose_reglab_csv_prints_table_and_verdict(tmp_path, capsys):
    train, val = _overfit_curves()
    h = History([{"epoch": i + 1, "train_loss": t, "val_loss": v} for i, (t, v) in enumerate(zip(train, val))])
    path = h.save(tmp_path / "history.csv")
    assert main(["diagnose", str(path), "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "verdict: overfitting" in out
    assert "val_rise_rel" in out and "best_epoch" in out
    assert "validation loss rose" in out


def test_diagnose_lightning_metrics_csv_json_output(tmp_path, capsys):
    train, val = _overfit_curves()
    lines = ["epoch,step,train_loss,val_loss"]
    for e, (t, v) in enumerate(zip(train, val)):
        lines += [f"{e},{10 * e + 4},{t},", f"{e},{10 * e + 9},{t},", f"{e},{10 * e + 9},,{v}"]
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(lines) + "\n")
    assert main(["diagnose", str(path), "--baseline", str(math.log(10)), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["regime"] == "overfitting" and data["epochs"] == len(train)
    assert data["columns"] == ["train_loss", "val_loss"]
    assert data["baseline_loss"] == pytest.approx(math.log(10))


def test_diagnose_keras_history_without_baseline_states_assumption(tmp_path, capsys):
    n = 30
    path = tmp_path / "keras.json"
    path.write_text(json.dumps({
        "loss": [0.2 + 2 * math.exp(-e / 4) for e in range(n)],
        "val_loss": [0.25 + 2 * math.exp(-e / 4) for e in range(n)],
    }))
    assert main(["diagnose", str(path)]) == 0
    out = capsys.readouterr().out
    assert "verdict: good_fit" in out
    assert "assumed" in out and "baseline_loss" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["missing.csv"], "HISTORY must be an existing file"),
        (["{h}", "--classes", "1"], "--classes must be >= 2; received classes=1"),
        (["{h}", "--baseline", "-2"], "--baseline must be a finite number > 0; received baseline=-2.0"),
        (["{h}", "--baseline", "1", "--classes", "3"], "give --baseline or --classes, not both"),
        (["{h}", "--val-col", "nope"], "column 'nope' not found"),
        (["{bad}"], "cannot diagnose"),
    ],
)
def test_diagnose_bad_usage_one_line_exit_2(args, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h = History([{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e} for e in range(1, 8)]).save(tmp_path / "h.csv")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    args = [a.format(h=h, bad=bad) for a in args]
    assert main(["diagnose", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert err.startswith("Error: ") and err.count("\n") == 1


def test_lint_recipe_setting(capsys):
    assert main(["lint", "digits:weight_decay"]) == 0
    assert "no findings" in capsys.readouterr().out
    assert main(["lint", "digits:dropout", "--json", "--strict"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"target": "digits:dropout", "findings": []}


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("digits", "TARGET must look like RECIPE:SETTING"),
        ("cifar:none", "unknown recipe 'cifar'"),
        ("digits:bogus", "unknown setting 'bogus'"),
    ],
)
def test_lint_bad_target(target, fragment, capsys):
    assert main(["lint", target]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
