"""``dkd-tune compare`` on a tiny two-head federation: every divergence × aggregation cell of
both federations filled with k seeds, stored and resumable; bad input refused in one line."""

from __future__ import annotations

import statistics

import optuna
import pytest
import torch
from neighbourhood_helpers import make_tiny2
from tuner_helpers import db_digest

from objectives import AGGREGATIONS, DIVERGENCES
from tuner.cli import main
from tuner.read.results import read_cells
from tuner.run.compare import CompareOptions, run_compare
from tuner.store.storage import get_storage
from tuner.views.tables import compare_table as table


@pytest.fixture(scope="module")
def single_thread():
    """One thread: a round of the tiny federation is milliseconds of work, which two threads
    only slow down on a busy two-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def compared(single_thread, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("compare")
    tiny2 = make_tiny2(root)
    url = f"sqlite:///{root / 'compare.db'}"
    opts = CompareOptions(config=tiny2["config"], storage=url, bundles=tiny2["bundles"])
    cells = run_compare(opts, say=lambda _m: None)
    return {**tiny2, "url": url, "opts": opts, "cells": cells}


def test_every_cell_of_both_federations_is_filled(compared: dict) -> None:
    cells = compared["cells"]
    assert [(c.partition, c.divergence, c.aggregation) for c in cells] == [
        (p, d, a) for p in ("iid", "dirichlet:0.5") for d in DIVERGENCES for a in AGGREGATIONS
    ]
    assert {c.federation for c in cells} == {"tiny2-iid", "tiny2"}
    for c in cells:
        assert c.n == 2 and c.accuracy_std is not None and all(s > 0 for s in c.seconds)
    text = table(cells)
    rows = text.splitlines()[1 : 1 + len(DIVERGENCES) * len(AGGREGATIONS)]
    assert len(rows) == 10 and all(" - " not in r and not r.endswith("-") for r in rows)
    assert "iid accuracy (%)" in text and "dirichlet:0.5 accuracy (%)" in text


def test_stored_rounds_hold_every_client(compared: dict) -> None:
    storage = get_storage(compared["url"])
    study = optuna.load_study(study_name="tiny2/compare", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == len(DIVERGENCES) * len(AGGREGATIONS) * 2
    for t in trials:
        clients = t.user_attrs["clients"]
        assert [c["student"] for c in clients] == [0, 1, 2]
        assert t.value == pytest.approx(statistics.fmean(c["accuracy_after"] for c in clients))
    assert study.user_attrs["neighbours"] == [[1, 2], [0, 2], [0, 1]]


def test_seeds_are_shared_so_cells_differ_only_by_what_they_compare(compared: dict) -> None:
    """CE and KL differ by the teachers' entropy, a constant: same seed, same gradients, the same
    round to the last bit. Other divergences, and sum against avg, train differently."""
    by = {(c.federation, c.divergence, c.aggregation): c for c in compared["cells"]}
    for fed in ("tiny2", "tiny2-iid"):
        for agg in AGGREGATIONS:
            assert by[fed, "ce", agg].accuracies == by[fed, "kl", agg].accuracies
    distinct = {c.accuracies for c in compared["cells"]}
    assert len(distinct) > len(compared["cells"]) // 4


def test_rerun_adds_nothing_and_the_cli_prints_the_table(
    compared: dict, capsys: pytest.CaptureFixture
) -> None:
    digest = db_digest(compared["url"])
    assert run_compare(compared["opts"], say=lambda _m: None) == compared["cells"]
    args = ["compare", "--config", compared["config"], "--bundles", compared["bundles"]]
    assert main([*args, "--storage", compared["url"]]) == 0
    out = capsys.readouterr().out
    assert table(read_cells(get_storage(compared["url"]))) in out
    assert db_digest(compared["url"]) == digest


def test_bad_input_is_one_line_and_writes_nothing(
    compared: dict, tiny: dict, capsys: pytest.CaptureFixture
) -> None:
    base = ["compare", "--config", compared["config"], "--bundles", compared["bundles"]]
    base += ["--storage", compared["url"]]
    cases = {
        "zero seeds": ([*base, "--seeds", "0"], "--seeds 0 must be"),
        "bad partition": ([*base, "--partitions", "iid,dirichlet:x"], "bad partition"),
        "partition twice": ([*base, "--partitions", "iid,iid"], "lists a partition twice"),
        "one-head model": (
            ["compare", "--config", tiny["config"], "--storage", compared["url"]],
            "needs a two-head model",
        ),
        "another temperature than the stored one": (
            [*base, "--set", "compare.temperature=2.0"],
            "was run with temperature = 1.0, the config gives 2.0",
        ),
        "unknown field": ([*base, "--set", "compare.seed=2"], "did you mean 'seeds'"),
    }
    digest = db_digest(compared["url"])
    for name, (args, phrase) in cases.items():
        code = main(args)
        _, err = capsys.readouterr()
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("dkd-tune: error: "), (name, err)
        assert phrase in err, (name, err)
        assert db_digest(compared["url"]) == digest, name


def test_report_draws_the_compare_table(
    compared: dict, tmp_path, capsys: pytest.CaptureFixture
) -> None:
    """The section the pair report appends, and the page ``compare --report`` writes alone."""
    from types import SimpleNamespace

    from tuner.views.report_kinds import compare_section

    assert compare_section(SimpleNamespace(compare=[])) is None
    section = compare_section(SimpleNamespace(compare=compared["cells"]))
    assert 'id="plot-compare-accuracy"' in section.body
    assert 'id="plot-compare-tradeoff"' in section.body
    assert section.body.count("<tr>") == 1 + len(DIVERGENCES) * len(AGGREGATIONS)
    page = tmp_path / "compare.html"
    args = ["compare", "--config", compared["config"], "--bundles", compared["bundles"]]
    assert main([*args, "--storage", compared["url"], "--report", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and 'id="plot-compare-accuracy"' in text
    first = compared["cells"][0]
    assert f"{first.accuracy:.2f} ± {first.accuracy_std:.2f}" in text
    capsys.readouterr()
