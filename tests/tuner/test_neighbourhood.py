"""``dkd-tune --mode neighbourhood``: one study per client on the real storages, the default
first, the round's numbers stored; status and export show the clients; bad input (a one-head
model, a bad client, another graph than the stored one) is one line and leaves the DB alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from neighbourhood_helpers import make_tiny2
from tuner_helpers import db_digest, finished, trials_of

from tuner import TuneOptions, tune
from tuner.cli import main
from tuner.kinds.client import CLIENT_DEFAULT
from tuner.read.results import client_rows
from tuner.store.storage import get_storage


@pytest.fixture(scope="module")
def tiny2(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_tiny2(tmp_path_factory.mktemp("tiny2"))


def _opts(tiny2: dict, url: str, **kw) -> TuneOptions:
    base = dict(
        config=tiny2["config"],
        bundles=tiny2["bundles"],
        storage=url,
        mode="neighbourhood",
        trials=2,
        pruner="none",
        progress="quiet",
    )
    return TuneOptions(**{**base, **kw})  # neighbourhood mode has no confirmation phase


def test_one_study_per_client_with_its_neighbours(tiny2: dict, backend_url: str) -> None:
    summary = tune(_opts(tiny2, backend_url, clients="0,1"), say=lambda _m: None)
    assert sorted(summary.studies) == ["tiny2/client-0", "tiny2/client-1"]
    storage = get_storage(backend_url)
    for k in (0, 1):
        name = f"tiny2/client-{k}"
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        assert attrs["client"] == k and attrs["mode"] == "neighbourhood"
        assert attrs["neighbours"] == [j for j in range(3) if j != k]  # the complete graph
        trials = trials_of(backend_url, name)
        assert finished(trials) == 2
        first = min(trials, key=lambda t: t.number)
        assert first.params == CLIENT_DEFAULT and first.user_attrs["default"] == "avg"
        for t in trials:
            assert set(t.params) == {"temperature", "alpha", "divergence", "aggregation"}
            u = t.user_attrs
            assert (u["client"], u["neighbours"], u["transfer_set"]) == (
                k,
                attrs["neighbours"],
                "local",
            )
            # The objective is head 2's accuracy after the round minus the client's before.
            assert t.value == pytest.approx(u["accuracy_after"] - attrs["accuracy"], abs=1e-6)
            assert u["accuracy_before"] == pytest.approx(attrs["accuracy"], abs=1e-3)
            assert "head1_accuracy_after" in u
    # A rerun tops up to the budget: nothing left to do, nothing added.
    again = tune(_opts(tiny2, backend_url, clients="0,1"), say=lambda _m: None)
    assert again.finished == 0
    assert all(finished(trials_of(backend_url, n)) == 2 for n in summary.studies)


@pytest.fixture(scope="module")
def clients_db(tiny2: dict, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Clients 0 and 2 tuned through the command line."""
    url = f"sqlite:///{tmp_path_factory.mktemp('nb') / 'nb.db'}"
    args = ["--config", tiny2["config"], "--bundles", tiny2["bundles"], "--storage", url]
    code = main([*args, "--mode", "neighbourhood", "--clients", "2,0", "--trials", "2",
                 "--pruner", "none", "--progress", "quiet"])  # fmt: skip
    assert code == 0
    return url


def test_clients_subset_status_and_export(
    clients_db: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    capsys.readouterr()
    digest = db_digest(clients_db)
    rows = client_rows(get_storage(clients_db))
    assert [r["study"] for r in rows] == ["tiny2/client-0", "tiny2/client-2"]
    assert all(r["finished"] == 2 and r["best_params"] for r in rows)
    assert main(["status", "--storage", clients_db]) == 0
    out = capsys.readouterr().out
    assert "tiny2/client-0" in out and "tiny2/client-2" in out and "client-1" not in out
    assert "no dkd-tune studies" not in out
    target = tmp_path / "best.csv"
    assert main(["export", "--storage", clients_db, "--format", "csv", "--out", str(target)]) == 0
    table = list(csv.DictReader(target.open()))
    assert [r["client"] for r in table] == ["0", "2"]
    assert [float(r["best_gain"]) for r in table] == [r["best_gain"] for r in rows]
    assert [r["divergence"] for r in table] == [r["best_params"]["divergence"] for r in rows]
    assert main(["export", "--storage", clients_db]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(rows))
    assert db_digest(clients_db) == digest  # reading never writes


def test_bad_input_is_one_line_and_writes_nothing(
    tiny2: dict, tiny: dict, clients_db: str, capsys: pytest.CaptureFixture
) -> None:
    base = ["--config", tiny2["config"], "--bundles", tiny2["bundles"], "--storage", clients_db]
    nb = [*base, "--mode", "neighbourhood"]
    cases = {
        "one-head model": (
            ["--config", tiny["config"], "--storage", clients_db, "--mode", "neighbourhood"],
            "needs a two-head model",
        ),
        "unknown mode": ([*base, "--mode", "star"], "unknown mode 'star'"),
        "client out of range": ([*nb, "--clients", "0,5"], "client 5 does not exist"),
        "malformed clients": ([*nb, "--clients", "0-1"], "bad --clients item '0-1'"),
        "clients without the mode": ([*base, "--clients", "0"], "--clients is for --mode"),
        "pairs with the mode": ([*nb, "--pairs", "0-1"], "--pairs is for --mode pair"),
        "self-loop": (
            [*nb, "--set", 'topology.kind="edges"', "--set", "topology.edges=[[0,1],[2,2]]"],
            "is a self-loop",
        ),
        "another graph than the stored one": (
            [*nb, "--set", 'topology.kind="edges"', "--set", "topology.edges=[[0,1],[1,2]]"],
            "learned from neighbours [1, 2], the config's [topology] gives [1]",
        ),
        "another transfer set": (
            [*nb, "--set", 'neighbourhood.transfer_set="public"'],
            "transfer_set = local, the config gives public",
        ),
    }
    digest = db_digest(clients_db)
    for name, (args, phrase) in cases.items():
        code = main(args)
        _, err = capsys.readouterr()
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("dkd-tune: error: "), (name, err)
        assert phrase in err, (name, err)
        assert db_digest(clients_db) == digest, name


def test_report_section_shows_the_clients(clients_db: str) -> None:
    from types import SimpleNamespace

    from tuner.views.report_kinds import neighbourhood_section

    rows = client_rows(get_storage(clients_db))
    assert neighbourhood_section(SimpleNamespace(clients=[])) is None
    body = neighbourhood_section(SimpleNamespace(clients=rows)).body
    assert 'id="plot-neighbourhood"' in body
    assert "tiny2/client-0" in body and "tiny2/client-2" in body
    assert body.count("<tr>") == 1 + len(rows)
