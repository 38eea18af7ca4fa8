"""``dkd-tune confirm`` on a run tuned without confirmation: the candidates and their defaults
re-run with fresh seeds, the plan stored in the study as the run's own ``--confirm`` stores it,
the recommendation used by the report and shown in the dashboard note; noise and pooled figures
against a float64 reference."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard import get_note
from tuner_helpers import db_digest, trials_of

from objectives import load_config, prepare_federation, run_trial
from tuner import TuneOptions, pair_rows, tune
from tuner.cli import main
from tuner.read.answer import Answer
from tuner.read.report_data import collect
from tuner.read.results import recommendations
from tuner.run.confirm import confirm
from tuner.store.records import PLAN_ATTR
from tuner.store.storage import get_storage

PAIRS = ("0-1", "1-3", "2-3")


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished small run without confirmation (``--confirm 0``: these tests confirm it with
    ``dkd-tune confirm``), kept pristine: each test confirms on its own copy. ``--strategy
    fixed``: these tests check the fixed strategy's candidates (its 3 best and their defaults);
    the race's confirmation is tested in test_race_run.py."""
    folder = tmp_path_factory.mktemp("confirm")
    tune(
        TuneOptions(
            confirm=0,
            strategy="fixed",
            config=tiny["config"],
            bundles=tiny["bundles"],
            storage=f"sqlite:///{folder / 'run.db'}",
            pairs=",".join(PAIRS),
            trials=4,
            sampler="random",
            pruner="none",
            progress="quiet",
        ),
        say=lambda _m: None,
    )
    return {"db": folder / "run.db", **tiny}


@pytest.fixture
def copy_url(tuned, tmp_path: Path) -> str:
    """A copy through SQLite's backup API (a WAL database is more than its main file)."""
    with sqlite3.connect(tuned["db"]) as src, sqlite3.connect(tmp_path / "run.db") as dst:
        src.backup(dst)
    return f"sqlite:///{tmp_path / 'run.db'}"


def _attrs(url: str, name: str) -> dict:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).user_attrs
    finally:
        storage.engine.dispose()


def _recommendation(url: str, name: str) -> Answer:
    storage = get_storage(url)
    study = next(s for s in storage.get_all_studies() if s.study_name == name)
    return recommendations(storage, [study])[name]


def test_a_run_writes_each_pair_a_dashboard_note(tuned) -> None:
    url = f"sqlite:///{tuned['db']}"
    rows = {r["study"]: r for r in pair_rows(get_storage(url))}
    for pair in PAIRS:
        name = f"tiny/{pair}"
        note = get_note(optuna.load_study(study_name=name, storage=url))
        assert note.startswith(f"<!-- dkd-tune -->\n## Pair {pair} of tiny")
        row = rows[name]
        assert f"Student **{row['student']}** learns from teacher **{row['teacher']}**" in note
        assert f"{row['default_gain']:+.2f}" in note and f"{row['best_gain']:+.2f}" in note
        assert '"best_params": {' in note and "single tuning trials" in note


def test_confirm_stores_reproducible_seed_runs(tuned, copy_url: str) -> None:
    chosen = PAIRS[:2]  # two pairs are enough here; a third only costs time
    outcomes = confirm(
        copy_url, repeats=2, pairs=",".join(chosen), bundles=tuned["bundles"], say=lambda _m: None
    )
    assert [o.state for o in outcomes] == ["confirmed"] * 2
    config = load_config(tuned["config"])
    bundle = prepare_federation(config, directory=tuned["bundles"])
    for pair in chosen:
        name = f"tiny/{pair}"
        record = _recommendation(copy_url, name)
        trials = trials_of(copy_url, name)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(done, key=lambda t: (t.value, -t.number))
        plan = _attrs(copy_url, name)[PLAN_ATTR]
        assert best.number in plan["candidates"]  # the single best is among the candidates
        assert record.default.params == {
            "temperature": 1.0,
            "alpha": 0.5,
            "divergence": "kl",
            "transfer_set": "public",
            "position": record.best.params["position"],
        }
        seeds = record.seeds
        assert list(seeds) == plan["seeds"] and len(seeds) == len(set(seeds)) == 2
        assert not set(seeds) & {t.user_attrs.get("seed") for t in trials}  # fresh seeds
        for runs in record.candidates:
            assert len(runs.gain) == 2
            assert runs.gain_mean == pytest.approx(np.mean(runs.gain), rel=1e-12)
            assert runs.gain_std == pytest.approx(np.std(runs.gain, ddof=1), rel=1e-12)
        # The stored gain is what run_trial gives for that configuration and seed.
        tested = record.best
        params = tested.params
        again = run_trial(
            bundle,
            tested.student,
            [tested.teacher],
            temperature=params["temperature"],
            alpha=params["alpha"],
            divergence=params["divergence"],
            transfer_set=params["transfer_set"],
            aggregation=params.get("aggregation", "avg"),
            seed=seeds[1],
            recipe=config.kd,
        )
        assert again.gain == tested.gain[1]
        note = get_note(optuna.load_study(study_name=name, storage=copy_url))
        assert "over 2 fresh seeds" in note


def test_report_uses_confirmed_figures_and_their_noise(tuned, copy_url: str) -> None:
    confirm(copy_url, repeats=2, pairs="0-1", bundles=tuned["bundles"], say=lambda _m: None)
    data = collect(get_storage(copy_url), copy_url, importances=False)
    by = {p.study: p for p in data.pairs}
    record = _recommendation(copy_url, "tiny/0-1")
    best, default = (np.array(c.gain, dtype=np.float64) for c in (record.best, record.default))
    noise = np.sqrt((best.std(ddof=1) ** 2 + default.std(ddof=1) ** 2) / 2)
    p = by["tiny/0-1"]
    assert p.confirmed and p.repeats == 2 and p.noise_source == "confirm"
    assert p.best_gain == pytest.approx(best.mean(), rel=1e-12)
    assert p.default_gain == pytest.approx(default.mean(), rel=1e-12)
    assert p.noise == pytest.approx(noise, rel=1e-12)
    assert p.beyond_noise == record.beyond_noise  # the recommendation's test, one rule
    direction = next(d for d in p.directions if d.position == record.best.params["position"])
    assert direction.confirmed and direction.best_gain == p.best_gain
    # Unconfirmed pairs take the root mean square of the confirmed pairs' noise (one here).
    for name in ("tiny/1-3", "tiny/2-3"):
        assert not by[name].confirmed and by[name].noise_source == "pooled"
        assert by[name].noise == pytest.approx(noise, rel=1e-12)
    assert data.summary.confirmed == 1 and data.summary.repeats == [2]


def test_confirm_skips_what_is_confirmed_and_flags_a_stale_best(tuned, copy_url: str) -> None:
    confirm(copy_url, repeats=2, pairs="2-3", bundles=tuned["bundles"], say=lambda _m: None)
    digest = db_digest(copy_url)
    again = confirm(copy_url, repeats=2, pairs="2-3", bundles=tuned["bundles"], say=print)
    assert [o.state for o in again] == ["skipped"] and "already confirmed" in again[0].reason
    assert db_digest(copy_url) == digest
    # A later run that found another best makes the confirmation stale: it is still the
    # pair's answer (as export says) and flagged, and the next confirm re-plans it.
    storage = get_storage(copy_url)
    study = optuna.load_study(study_name="tiny/2-3", storage=storage)
    top = max((t for t in study.get_trials() if t.state == TrialState.COMPLETE),
              key=lambda t: t.value)  # fmt: skip
    study.add_trial(optuna.trial.create_trial(params=top.params, distributions=top.distributions,
                                              value=top.value + 50.0))  # fmt: skip
    p = next(p for p in collect(storage, copy_url, importances=False).pairs if p.pair == (2, 3))
    assert p.stale_confirmation and p.confirmed
    assert p.best_gain == _recommendation(copy_url, "tiny/2-3").best.gain_mean


def test_confirm_bad_input_changes_nothing(tuned, copy_url: str, capsys) -> None:
    digest = db_digest(copy_url)
    base = ["confirm", "--storage", copy_url, "--bundles", tuned["bundles"]]
    cases = {
        "one repeat": ([*base, "--repeats", "1"], "gives no spread"),
        "pair out of range": ([*base, "--pairs", "0-7"], "participant 7 does not exist"),
        "pair without a study": ([*base, "--pairs", "0-2"], "none of these pairs has a study"),
        "unknown federation": ([*base, "--federation", "nope"], "for federation nope"),
        "missing device": ([*base, "--devices", "cuda:5"], "cuda:5 does not exist"),
        "missing database": (
            ["confirm", "--storage", f"sqlite:///{Path(tuned['db']).parent / 'typo.db'}"],
            "no database at",
        ),
    }
    for name, (args, phrase) in cases.items():
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and phrase in err and "Traceback" not in err, (name, err)
    assert db_digest(copy_url) == digest


def test_confirm_and_report_on_each_backend(backend_url: str, opts, tmp_path: Path) -> None:
    """The same flow on SQLite and on the PostgreSQL server: run, confirm, report, note."""
    tune(opts(storage=backend_url, pairs="1-2", trials=3), say=lambda _m: None)
    options = opts()
    confirm(backend_url, repeats=2, bundles=options.bundles, say=lambda _m: None)
    data = collect(get_storage(backend_url), backend_url, importances=False)
    (p,) = data.pairs
    record = _recommendation(backend_url, "tiny/1-2")
    assert p.confirmed and p.best_gain == pytest.approx(np.mean(record.best.gain))
    out = tmp_path / "report.html"
    assert main(["report", "--storage", backend_url, "--out", str(out)]) == 0
    assert "1 of 1 pairs are confirmed" in out.read_text()
    note = get_note(optuna.load_study(study_name="tiny/1-2", storage=get_storage(backend_url)))
    assert "over 2 fresh seeds" in note
