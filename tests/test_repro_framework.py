"""The reproduction framework: registry, result type, report and the ``reglab repro`` command."""

import json
from html.parser import HTMLParser

import pytest

from reglab.cli import main
from reglab.recipes import _repro
from reglab.recipes._repro import Check, Plot, Repro, ReproResult, Table, available, get, run_repro
from reglab.report.repro import repro_report_html, write_repro_report


def _toy_run(*, fast=False, seeds=None, progress=None):
    if progress is not None:
        progress(1, 1, "toy")
    return ReproResult(
        name="toy",
        title="Toy <result>",
        source="A & B, 2020",
        setup="nothing trained",
        published=[["x", "1", "1.0"]],
        checks=[Check("x equals 1", True, "x = 1.0"), Check("y < 2 <script>", seeds != 7, "y = 1")],
        diagnosis="fine",
        tables=[Table("numbers", ["a", "b"], [[1, 0.123456], [2, float("nan")]])],
        plots=[
            Plot("curve", series={"a": [[1, 2, 3], [3.0, 2.0, None]]}, log_y=True, hlines={"ref": 1.5}),
            Plot("bars", kind="bar", series={"a": [1.0, 0.1], "b": [2.0, 0.2]}),
            Plot("grid", kind="heatmap", matrix=[[1.0, 2.0], [0.5, float("nan")]], x_ticks=["1", "2"], y_ticks=["a", "b"]),
        ],
        metrics={"x": 1.0, "bad": float("inf")},
    )


TOY = Repro(name="toy", title="Toy", order=0, run=_toy_run)


def test_registry_lists_the_recipes_in_report_order():
    recipes = available()
    for name in ("d2l_weight_decay", "polynomial", "early_stopping"):
        assert name in recipes and recipes[name].name == name
    orders = [r.order for r in recipes.values()]
    assert orders == sorted(orders)
    assert get("polynomial") is recipes["polynomial"]


def test_unknown_name_and_bad_arguments_are_rejected_with_the_value():
    with pytest.raises(ValueError, match=r"name='nope'.*choose from"):
        get("nope")
    with pytest.raises(ValueError, match=r"seeds=0"):
        run_repro("polynomial", seeds=0)
    with pytest.raises(ValueError, match=r"kind='pie'"):
        Plot("p", kind="pie")
    with pytest.raises(ValueError, match=r"name='bad name'"):
        Repro(name="bad name", title="t", order=0, run=_toy_run)


def test_result_passes_only_when_every_check_holds_and_json_is_strict():
    result = _toy_run()
    assert result.passed
    assert not _toy_run(seeds=7).passed and len(_toy_run(seeds=7).failed_checks()) == 1
    assert not ReproResult(name="n", title="t", source="s", setup="s").passed  # no checks: nothing reproduced
    data = json.loads(result.to_json())
    assert data["metrics"]["bad"] is None and data["passed"] is True
    assert data["plots"][0]["series"]["a"][1] == [3.0, 2.0, None]


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_report_escapes_text_embeds_svg_figures_and_links_sections(tmp_path):
    path = write_repro_report([_toy_run(), _toy_run(seeds=7)], tmp_path / "sub" / "report.html")
    html = path.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Toy &lt;result&gt;" in html and "A &amp; B, 2020" in html
    parser = _Collect()
    parser.feed(html)
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(images) == 6 and all(src.startswith("data:image/svg+xml;base64,") for src in images)
    assert ("a", {"href": "#repro-toy"}) in parser.tags
    text = " ".join(parser.text)
    assert "not reproduced" in text and "1 of 2 claims hold" in text and "2 of 2 claims hold" in text
    with pytest.raises(ValueError, match="at least one"):
        repro_report_html([])


@pytest.fixture
def toy_registry(monkeypatch):
    monkeypatch.setattr(_repro, "available", lambda: {"toy": TOY})


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["nope"], "unknown reproduction name='nope'"),
        (["toy", "--all"], "give a NAME or --all, not both"),
        ([], "give a NAME or --all; available: toy"),
        (["toy", "--seeds", "0"], "--seeds must be >= 1; received seeds=0"),
    ],
)
def test_cli_bad_usage_is_one_line_exit_2(toy_registry, args, fragment, capsys, tmp_path):
    code = main(["repro", *args, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert not (tmp_path / "report.html").exists()


def test_cli_all_writes_report_and_results(toy_registry, tmp_path, capsys):
    assert main(["repro", "--all", "--out", str(tmp_path), "--quiet", "--fast"]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in data["results"]] == ["toy"] and data["results"][0]["fast"] is True
    assert "Toy &lt;result&gt;" in (tmp_path / "report.html").read_text()
    # a claim that does not hold is reported and the exit status says so
    assert main(["repro", "toy", "--out", str(tmp_path), "--seeds", "7"]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced" in out and "y < 2 <script>" in out


def test_cli_list_names_every_recipe(capsys):
    assert main(["repro", "--list"]) == 0
    out = capsys.readouterr().out
    assert "d2l_weight_decay" in out and "polynomial" in out


def test_results_round_trip_through_json(tmp_path):
    from reglab.recipes._repro import load_results, save_results

    original = _toy_run(seeds=7)
    path = save_results([original, _toy_run()], tmp_path / "results.json")
    back = load_results(path)
    assert [r.name for r in back] == ["toy", "toy"]
    assert back[0].checks == original.checks and back[0].passed is False and back[1].passed is True
    assert back[0].plots[2].kind == "heatmap" and back[0].tables[0].headers == ["a", "b"]
    # a report can be rebuilt from saved results
    assert "Toy &lt;result&gt;" in repro_report_html(back)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="no 'results' key"):
        load_results(tmp_path / "bad.json")
