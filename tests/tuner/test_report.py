"""The report's numbers against a float64 reference computed here from the raw trials, the page's
promises (self-contained, a caption per figure, read-only), and its bad input."""

from __future__ import annotations

import html
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState
from tuner_helpers import db_digest, trials_of

from tuner import TuneOptions, tune
from tuner.cli import main
from tuner.read.report_data import NOISE_FALLBACK_PP, collect
from tuner.store.storage import get_storage
from tuner.views.html_parts import Section
from tuner.views.report import SECTIONS, render
from tuner.views.status import joined

PAIRS = ("0-1", "0-2", "2-3")


@pytest.fixture(scope="module")
def run_db(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished small run (random sampler: bests other than the default are likely)."""
    folder = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{folder / 'run.db'}"
    tune(
        TuneOptions(
            confirm=0,  # the single-trial figures (a confirmed run's: test_confirm.py)
            config=tiny["config"],
            bundles=tiny["bundles"],
            storage=url,
            pairs=",".join(PAIRS),
            trials=4,
            sampler="random",
            pruner="none",
            progress="quiet",
        ),
        say=lambda _m: None,
    )
    return {"url": url, "folder": folder, **tiny}


def reference(url: str, noise: float) -> dict:
    """The poster's figures recomputed in float64 from the trials alone (no tuner code)."""
    margins, ratios, acc_ratios, needs = [], [], [], 0
    for pair in PAIRS:
        done = [t for t in trials_of(url, f"tiny/{pair}") if t.state == TrialState.COMPLETE]
        best = max(done, key=lambda t: (t.value, -t.number))
        default = next(t for t in done if t.user_attrs.get("default") == best.params["position"])
        margin = np.float64(best.value) - np.float64(default.value)
        margins.append(margin)
        if default.value > 0:
            ratios.append(np.float64(best.value) / np.float64(default.value))
        acc_ratios.append(
            np.float64(best.user_attrs["accuracy_after"])
            / np.float64(default.user_attrs["accuracy_after"])
        )
        t_alpha = (best.params["temperature"], best.params["alpha"]) != (1.0, 0.5)
        needs += bool(t_alpha and margin > noise)
    return {
        "needs": needs,
        "better": sum(m > 0 for m in margins),
        "gain_mean": np.mean(ratios) if ratios else None,
        "gain_median": np.median(ratios) if ratios else None,
        "gain_used": len(ratios),
        "acc_mean": np.mean(acc_ratios),
        "acc_median": np.median(acc_ratios),
    }


def test_unconfirmed_figures_match_a_float64_reference(run_db) -> None:
    data = collect(get_storage(run_db["url"]), run_db["url"])
    s = data.summary
    ref = reference(run_db["url"], NOISE_FALLBACK_PP)
    assert (s.pairs, s.compared, s.trials_min, s.trials_max, s.budget) == (3, 3, 4, 4, 4)
    assert s.needs_tuning == ref["needs"] and s.better == ref["better"]
    assert s.share_needing_tuning == pytest.approx(ref["needs"] / 3, rel=1e-12)
    assert s.gain_ratio.used == ref["gain_used"]
    if ref["gain_used"]:
        assert s.gain_ratio.mean == pytest.approx(ref["gain_mean"], rel=1e-12)
        assert s.gain_ratio.median == pytest.approx(ref["gain_median"], rel=1e-12)
    assert s.accuracy_ratio.mean == pytest.approx(ref["acc_mean"], rel=1e-12)
    assert s.accuracy_ratio.median == pytest.approx(ref["acc_median"], rel=1e-12)
    # Before any confirm, the documented fallback is every pair's noise.
    assert {p.noise_source for p in data.pairs} == {"fallback"}
    assert all(p.noise == NOISE_FALLBACK_PP and not p.confirmed for p in data.pairs)
    # The heatmap cells: each direction's default is its default trial.
    for p in data.pairs:
        trials = trials_of(run_db["url"], p.study)
        for d in p.directions:
            default = next(t for t in trials if t.user_attrs.get("default") == d.position)
            assert d.default_gain == default.value
            assert (d.student, d.teacher) == (
                p.pair if d.position == "a" else (p.pair[1], p.pair[0])
            )


def test_report_command_writes_a_self_contained_page(run_db, tmp_path: Path, capsys) -> None:
    digest = db_digest(run_db["url"])
    out = tmp_path / "report.html"
    assert main(["report", "--storage", run_db["url"], "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text()
    assert db_digest(run_db["url"]) == digest  # the report only reads
    assert "<script src" not in page and "Plotly.newPlot" in page  # plotly.js is inline
    figures = re.findall(r"<figure id=\"figure-[^\"]+\">.*?</figure>", page, re.S)
    assert len(figures) == page.count("Plotly.newPlot") >= 7
    for fig in figures:
        caption = re.search(r"<figcaption>(.+?)</figcaption>", fig, re.S)
        assert caption and len(caption.group(1).strip()) > 20
    ids = re.findall(r'<section id="([^"]+)">', page)
    data = collect(get_storage(run_db["url"]), run_db["url"])
    # A section with nothing to show (no compare or neighbourhood studies here) is left out.
    assert ids == [s.id for s in (fn(data) for fn in SECTIONS) if s is not None]
    assert all(f"<td>{p}</td>" in page for p in PAIRS)  # the per-pair table
    assert not list(tmp_path.glob(".report.html.*"))  # no temporary file left


def test_a_section_is_one_function(run_db) -> None:
    """Another view is a function appended to the list of sections."""
    data = collect(get_storage(run_db["url"]), run_db["url"], importances=False)

    def extra(d) -> Section:
        return Section("extra", "An extra view", f"<p>{len(d.pairs)} pairs</p>")

    page = render(data, [*SECTIONS[:1], extra])
    assert '<section id="extra"><h2>An extra view</h2><p>3 pairs</p></section>' in page
    assert page.index('id="answer"') < page.index('id="extra"')


def test_the_report_leads_with_the_answers_status_prints(tuned, tmp_path: Path, capsys) -> None:
    """The page's first section and the first lines ``dkd-tune report`` prints are status's
    lines for the same storage, word for word (one owner: tuner.views.status)."""
    assert main(["status", "--storage", tuned["url"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "no answer yet" not in "".join(lines)  # two answered pairs
    out = tmp_path / "report.html"
    assert main(["report", "--storage", tuned["url"], "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {out}" and printed[1:4] == lines
    page = out.read_text()
    first = re.search(r'<section id="([^"]+)"><h2>[^<]*</h2>(.*?)</section>', page, re.S)
    assert first is not None and first.group(1) == "answer"
    body = first.group(2)
    assert html.unescape(re.search(r"<p>(.*?)</p>", body).group(1)) == lines[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[1])
    cells = [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", r)] for r in rows]
    assert [joined(*c) for c in cells] == lines[1:]
    assert [c[0].split()[0] for c in cells] == ["0-1", "1-2"]


def test_report_bad_input(run_db, tmp_path: Path, capsys) -> None:
    digest = db_digest(run_db["url"])
    cases = {
        "missing database": (
            ["report", "--storage", f"sqlite:///{tmp_path / 'typo.db'}"],
            "no database at",
        ),
        "missing folder": (
            ["report", "--storage", run_db["url"], "--out", str(tmp_path / "no" / "r.html")],
            "does not exist",
        ),
        "unknown federation": (
            ["report", "--storage", run_db["url"], "--federation", "nope"],
            "for federation nope",
        ),
    }
    for name, (args, phrase) in cases.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and phrase in err and "Traceback" not in err, (name, err)
    assert db_digest(run_db["url"]) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_of_the_new_commands(capsys) -> None:
    for command in ("report", "confirm", "dashboard"):
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"dkd-tune {command}" in text


def test_dashboard_bad_input(run_db, capsys) -> None:
    """A port out of range or taken is one line and exit 2 (the server is only bound, never
    served, when it works: the browser tests serve it for real)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            "port out of range": (["--port", "70000"], "is not a port"),
            "port taken": (["--port", str(port)], "cannot listen on 127.0.0.1"),
        }
        for name, (args, phrase) in cases.items():
            assert main(["dashboard", "--storage", run_db["url"], *args]) == 2, name
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and phrase in err, (name, err)
