"""The demo report: escaped, self-contained, and rendered by a real headless browser."""

import re

import numpy as np
import pytest

import reglab.recipes.digits as digits
from reglab.recipes.digits import DemoConfig, run
from reglab.report.demo import demo_report_html, write_demo_report
from reglab.report.html import table

from browser import dump_dom, screenshot

CFG = DemoConfig(settings=("none", "dropout", "early_stopping"), seeds=2, epochs=15, n_train=150, n_val=100)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    return write_demo_report(run(CFG), path)


def test_report_is_self_contained(report):
    html = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html
    assert html.count('<img src="data:image/svg+xml;base64,') == 2
    for setting in CFG.settings:
        assert f'id="technique-{setting}"' in html


def test_everything_written_is_escaped(monkeypatch):
    evil = "<img src=x onerror=alert(1)>"
    monkeypatch.setitem(digits.SETTINGS, "none", digits.Setting("none", evil, explanation=evil, formula=evil))
    html = demo_report_html(run(DemoConfig(settings=("none",), seeds=1, epochs=2, n_train=60, n_val=40)))
    assert evil not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert table(["<th>"], [["a&b"]]).count("&lt;th&gt;") == 1


def test_report_renders_in_headless_chromium(report, tmp_path):
    # Ask the browser itself whether every figure decoded: a test copy gets a tiny script that
    # records each image's natural size into the DOM after load.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace(
        "</body>",
        "<script>window.addEventListener('load',()=>{document.body.dataset.imgs="
        "[...document.images].map(i=>i.naturalWidth+'x'+i.naturalHeight).join(',');"
        "document.body.dataset.rows=document.querySelectorAll('table.results tbody tr').length;});</script></body>",
    ))
    dom = dump_dom(probe, tmp_path / "profile1")
    rows = re.search(r'data-rows="(\d+)"', dom)
    imgs = re.search(r'data-imgs="([^"]*)"', dom)
    assert rows and int(rows.group(1)) == len(CFG.settings)
    assert imgs, "load handler did not run"
    sizes = [tuple(map(int, s.split("x"))) for s in imgs.group(1).split(",")]
    assert len(sizes) == 2 and all(w > 200 and h > 100 for w, h in sizes)

    png = screenshot(report, tmp_path / "shot.png", tmp_path / "profile2")
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)[..., :3]
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1000
    ink = (pixels.mean(axis=2) < 0.85).mean()
    assert ink > 0.02, f"screenshot looks blank ({ink:.3%} non-white)"
    # the plots add colour: the train/validation curves are blue and orange
    rgb = pixels.reshape(-1, 3)
    assert (np.abs(rgb[:, 0] - rgb[:, 2]) > 0.3).mean() > 0.001


def test_reports_are_written_atomically(tmp_path):
    from reglab.report.html import write_page

    target = tmp_path / "sub" / "report.html"
    write_page(target, "<p>one</p>")
    write_page(target, "<p>two</p>")
    assert target.read_text() == "<p>two</p>"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]  # no temporary left
