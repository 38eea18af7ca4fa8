"""Pair studies on a real SQLite file: names, attributes, defaults first, budget top-ups,
refusing a changed federation, and export equal to the database."""

from __future__ import annotations

import csv
import io
import json

import optuna
import pytest
from optuna.trial import TrialState
from tuner_helpers import db_digest, finished, trials_of

from objectives import load_config, prepare_federation
from tuner import StorageError, pair_rows, render, study_name, tune
from tuner.store.storage import get_storage

TRIAL_ATTRS = {
    "student",
    "teacher",
    "accuracy_before",
    "accuracy_after",
    "local_accuracy_before",
    "local_accuracy_after",
    "forgetting",
    "seconds",
    "device",
    "worker_host",
}


def test_names_attrs_defaults_and_topups(opts, tiny) -> None:
    o = opts(pairs="0-1,2-3", trials=4)
    tune(o, say=lambda _m: None)
    bundle = prepare_federation(load_config(tiny["config"]), directory=tiny["bundles"])
    storage = get_storage(o.storage)
    names = sorted(s.study_name for s in storage.get_all_studies())
    pairs = [study_name("tiny", p) for p in [(0, 1), (2, 3)]]
    # a study per pair, and (the default --confirm 3) a confirmation study per pair
    assert names == ["tiny/0-1", "tiny/0-1/confirm", "tiny/2-3", "tiny/2-3/confirm"]
    names = [n for n in names if n in pairs]
    assert names == ["tiny/0-1", "tiny/2-3"]
    for (a, b), name in [((0, 1), "tiny/0-1"), ((2, 3), "tiny/2-3")]:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
        assert attrs["pair"] == [a, b]
        assert attrs["federation_hash"] == bundle.hash
        assert attrs["accuracy_a"] == pytest.approx(float(bundle.accuracy[a]), abs=1e-3)
        assert attrs["accuracy_b"] == pytest.approx(float(bundle.accuracy[b]), abs=1e-3)
        trials = trials_of(o.storage, name)
        assert finished(trials) == 4
        # The default trials come first, once per position, with the default parameters.
        first = sorted(trials, key=lambda t: t.number)[:2]
        assert [t.user_attrs["default"] for t in first] == ["a", "b"]
        assert [t.params["position"] for t in first] == ["a", "b"]
        assert all(t.params["temperature"] == 1.0 and t.params["alpha"] == 0.5 for t in first)
        assert sum("default" in t.user_attrs for t in trials) == 2
        for t in trials:
            if t.state == TrialState.COMPLETE:
                assert set(t.user_attrs) >= TRIAL_ATTRS
                student = a if t.params["position"] == "a" else b
                teacher = a + b - student
                assert (t.user_attrs["student"], t.user_attrs["teacher"]) == (student, teacher)
                assert t.value == pytest.approx(
                    t.user_attrs["accuracy_after"] - t.user_attrs["accuracy_before"]
                )
            assert ("aggregation" in t.params) == (t.params["transfer_set"] == "public+self")

    # A rerun tops up to the new N; the same N again, or a smaller one, adds nothing.
    tune(opts(pairs="0-1,2-3", trials=6), say=lambda _m: None)
    assert [finished(trials_of(o.storage, n)) for n in names] == [6, 6]
    before = db_digest(o.storage)
    tune(opts(pairs="0-1", trials=6), say=lambda _m: None)
    assert db_digest(o.storage) == before  # a complete run is a no-op, byte for byte
    tune(opts(pairs="0-1", trials=2), say=lambda _m: None)
    assert [finished(trials_of(o.storage, n)) for n in names] == [6, 6]
    assert sum("default" in t.user_attrs for t in trials_of(o.storage, "tiny/0-1")) == 2

    # Export equals what the database holds.
    rows = {r["study"]: r for r in pair_rows(storage)}
    for name in names:
        trials = trials_of(o.storage, name)
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(done, key=lambda t: (t.value, -t.number))
        default = next(t for t in done if t.user_attrs.get("default") == best.params["position"])
        row = rows[name]
        assert row["pair"] == name.split("/")[1]
        assert row["trial"] == best.number
        assert row["best_params"] == best.params
        assert row["best_gain"] == best.value
        assert (row["student"], row["teacher"]) == (
            best.user_attrs["student"],
            best.user_attrs["teacher"],
        )
        assert row["default_gain"] == default.value
        assert row["improvement"] == pytest.approx(best.value - default.value)
        assert row["finished"] == 6
    parsed = json.loads(render(list(rows.values()), "json"))
    assert {r["study"]: r["best_gain"] for r in parsed} == {
        n: r["best_gain"] for n, r in rows.items()
    }
    table = list(csv.DictReader(io.StringIO(render(list(rows.values()), "csv"))))
    for line in table:
        row = rows[line["study"]]
        assert float(line["best_gain"]) == pytest.approx(row["best_gain"])
        assert float(line["temperature"]) == pytest.approx(row["best_params"]["temperature"])
        assert line["divergence"] == row["best_params"]["divergence"]
        assert int(line["trial"]) == row["trial"]


def test_changed_federation_refused_and_nothing_written(opts) -> None:
    tune(opts(trials=2), say=lambda _m: None)
    before = db_digest(opts().storage)
    # seed changes the federation hash but not the name: same study names, other federation.
    with pytest.raises(StorageError) as err:
        tune(opts(trials=4, overrides=["seed=1"]), say=lambda _m: None)
    message = str(err.value)
    stored = optuna.load_study(study_name="tiny/0-1", storage=get_storage(opts().storage))
    assert stored.user_attrs["federation_hash"] in message
    assert "--storage" in message and "federation name" in message
    assert "\n" not in message
    assert db_digest(opts().storage) == before
    # The KD recipe is what the stored trials mean, too.
    with pytest.raises(StorageError, match=r"\[kd\] lr"):
        tune(opts(trials=4, overrides=["kd.lr=0.5"]), say=lambda _m: None)
    assert db_digest(opts().storage) == before


def test_grid_sampler_past_its_grid_and_hyperband(opts) -> None:
    """A grid smaller than the budget: the run still ends at the budget, not with an error."""
    small = [
        "search.grid_temperature=[1.0, 4.0]",
        "search.grid_alpha=[0.5]",
        'search.divergence=["kl"]',
        'search.transfer_set=["public"]',
        'search.aggregation=["avg"]',
    ]
    # --strategy fixed: past its grid the sampler proposes points again, which a race counts as
    # the same configurations (it would run to its cap); the test is about the budget.
    o = opts(trials=8, sampler="grid", pruner="hyperband", overrides=small, strategy="fixed")
    tune(o, say=lambda _m: None)
    trials = trials_of(o.storage, "tiny/0-1")
    assert finished(trials) == 8  # 2 defaults + 6 grid trials over a 4-point grid
    assert {t.params["temperature"] for t in trials} == {1.0, 4.0}
