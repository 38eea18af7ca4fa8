"""The report file opened in headless Chromium from disk (no server, no network): every figure is
drawn as SVG with its caption, the bars and heatmap cells are there, and the tables are shown."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tuner.views import status
from tuner.views.report import write_report

FIGURES = "figure .js-plotly-plot"
BODY_TEXT = "return document.body ? document.body.innerText : '';"


def full_page_screenshot(browser, path: Path, max_height: int = 6000) -> None:
    """The whole page: the window is resized to the document's height first."""
    height = min(
        browser.execute_script("return document.documentElement.scrollHeight;"), max_height
    )
    browser.set_window_size(browser.get_window_size()["width"], height)
    time.sleep(1.0)  # responsive plots redraw after the resize
    assert browser.save_screenshot(path)


def test_report_plots_are_drawn(browser, until, run_db, shots) -> None:
    out = run_db["root"] / "report.html"
    data = write_report(run_db["url"], out)
    browser.get(out.as_uri())
    expected = browser.execute_script("return document.querySelectorAll('figure').length;")
    assert expected >= 7
    # Each figure's plot has drawn its SVG layers (plotly.js ran from the inline script).
    until(
        60,
        "return [...document.querySelectorAll(arguments[0])]"
        ".filter(p => p.querySelector('svg.main-svg')).length === arguments[1];",
        FIGURES,
        expected,
    )
    # Every plot fits in its figure's box (none drawn wider than its column and clipped).
    until(
        30,
        "return [...document.querySelectorAll('figure')].every(f => "
        "f.querySelector('svg.main-svg').getBoundingClientRect().width "
        "<= f.getBoundingClientRect().width + 1);",
    )
    captions = browser.execute_script(
        "return [...document.querySelectorAll('figure')].map(f => "
        "f.querySelector('figcaption') ? f.querySelector('figcaption').innerText.trim() : '');"
    )
    assert len(captions) == expected and all(len(c) > 20 for c in captions)
    # One bar per pair for the default and one for the best.
    bars = browser.execute_script(
        "return document.querySelectorAll('#plot-bars .trace.bars .point').length;"
    )
    assert bars == 2 * len(data.compared)
    # Heatmaps: the cell values are written on the cells (texttemplate), one per direction.
    cells = browser.execute_script(
        "return [...document.querySelectorAll('#plot-heat-default g.heatmap-label text')]"
        ".map(t => t.textContent);"
    )
    assert len(cells) == 2 * len(data.pairs)
    shown = sorted(float(c) for c in cells)
    gains = sorted(d.default_gain for p in data.pairs for d in p.directions)
    assert shown == pytest.approx(gains, abs=0.051)  # one decimal on the cells
    text = browser.execute_script(BODY_TEXT)
    # The first screen is the answer per pair, in status's words (before the poster's figures).
    first = browser.execute_script(
        "const s = document.querySelector('section'); return [s.id, s.innerText];"
    )
    assert first[0] == "answer" and status.summary(data.rows) in first[1]
    assert all(status.answer(r) in first[1] for r in data.rows)
    s = data.summary
    assert f"{s.needs_tuning} of {s.compared}" in text
    for study in run_db["studies"]:
        pair = study.split("/")[1]
        assert browser.execute_script(
            "return [...document.querySelectorAll('#pairs td')]"
            ".some(td => td.innerText === arguments[0]);",
            pair,
        )
    full_page_screenshot(browser, shots / "report.png")
    assert (shots / "report.png").stat().st_size > 10_000
