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


# Real output of Lightning's CSVLogger (lightning 2.x, a LogisticRegression-sized LightningModule logging
# train_loss with on_step=True, on_epoch=True and val_loss per epoch), values rounded to 6 digits.
LIGHTNING_METRICS_CSV = """\
epoch,step,train_loss_epoch,train_loss_step,val_loss
0,0,,0.703526,
0,1,,0.649689,
0,2,,0.627799,
0,3,,0.656685,
0,3,,,0.574833
0,3,0.659425,,
1,4,,0.556717,
1,5,,0.545858,
1,6,,0.488278,
1,7,,0.569541,
1,7,,,0.484744
1,7,0.540098,,
2,8,,0.462309,
2,9,,0.474335,
2,10,,0.402045,
2,11,,0.506917,
2,11,,,0.423107
2,11,0.461402,,
3,12,,0.399046,
3,13,,0.422896,
3,14,,0.344485,
3,15,,0.459976,
3,15,,,0.378549
3,15,0.406601,,
4,16,,0.35444,
4,17,,0.384275,
4,18,,0.303251,
4,19,,0.42339,
4,19,,,0.344784
4,19,0.366339,,
5,20,,0.321469,
5,21,,0.354195,
5,22,,0.272067,
5,23,,0.39392,
5,23,,,0.318204
5,23,0.335413,,
"""


def test_diagnose_real_lightning_csvlogger_file(tmp_path, capsys):
    path = tmp_path / "metrics.csv"
    path.write_text(LIGHTNING_METRICS_CSV)
    from reglab.diagnosis import read_curves

    curves = read_curves(path)
    assert (curves["train_key"], curves["val_key"]) == ("train_loss_epoch", "val_loss")
    assert curves["train_loss"][:2] == pytest.approx([0.659425, 0.540098])
    assert curves["val_loss"][:2] == pytest.approx([0.574833, 0.484744])
    assert len(curves["train_loss"]) == 6
    assert main(["diagnose", str(path), "--classes", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["epochs"] == 6 and data["best_epoch"] == 6
    assert data["regime"] == "underfitting"  # both losses still falling fast after 6 epochs
