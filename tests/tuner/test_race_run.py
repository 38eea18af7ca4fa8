"""The race as users run it (``dkd-tune --pairs 0-1 --trials N`` with every default on: the race,
its GP sampler, the quartile pruner, up to 8 fresh seeds for the answer) on the tiny federation
and a real SQLite file: what it stores per round, why it stops, the answer, a joining worker
going on with it, and the strategy a study was run with."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import sqlalchemy
from optuna.trial import TrialState
from tuner_helpers import db_digest, finished, trials_of

from objectives import DkdError
from tuner import tune
from tuner.read.results import pair_rows, pair_studies, recommendations
from tuner.run.tuning import join_run
from tuner.search.race import SEED_ATTR, race_state, round_seed
from tuner.store.db import STOPPED_ATTR, open_storage
from tuner.store.records import PLAN_ATTR
from tuner.strategies import STRATEGIES
from tuner.views.export import render
from tuner.views.tables import status_table

CAP = 120


def _seeds_by_configuration(trials) -> dict:
    out = defaultdict(dict)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            out[tuple(sorted(t.params.items()))][t.user_attrs[SEED_ATTR]] = t
    return out


def _check_rounds(trials) -> None:
    """Every configuration's seeds are a prefix 0..n-1 and seed index j ran with round_seed(j)
    (the pairing), whichever configuration it was."""
    for rounds in _seeds_by_configuration(trials).values():
        assert sorted(rounds) == list(range(len(rounds)))
        assert all(t.user_attrs["seed"] == round_seed(j) for j, t in rounds.items())


def test_a_race_stops_on_its_own_and_answers_on_fresh_seeds(opts) -> None:
    o = opts(pairs="0-1", trials=CAP)
    tune(o, say=lambda _m: None)
    storage = open_storage(o.storage)
    study = pair_studies(storage)[0]
    trials = storage.get_all_trials(study._study_id, deepcopy=False)
    assert study.user_attrs["strategy"] == "race"
    assert study.user_attrs[STOPPED_ATTR] == "settled" and finished(trials) < CAP
    _check_rounds(trials)
    state = race_state(trials)
    assert state.incumbent.n >= 2 and state.settled
    # The answer: the incumbent and its default on up to 8 seeds the race never ran, decided
    # on the first 3 when they are clear (tuner.read.decision).
    plan = study.user_attrs[PLAN_ATTR]
    assert plan["candidates"] == [t.number for t in STRATEGIES["race"].candidates(trials)]
    assert plan["candidates"][0] == state.incumbent.first.number
    raced = {t.user_attrs["seed"] for t in trials}
    assert len(plan["seeds"]) == 8 and not raced & set(plan["seeds"])
    rec = recommendations(storage, [study])[study.study_name]
    assert rec.min_gain == 0.5 and rec.recommended is not None
    runs = [t for t in trials_of(o.storage, f"{study.study_name}/confirm")
            if t.state == TrialState.COMPLETE]  # fmt: skip
    assert sorted((t.params["candidate"], t.params["seed"]) for t in runs) == sorted(
        (c, s) for c in plan["candidates"] for s in rec.seeds
    )  # the runs of the looks it needed, each once
    if len(plan["candidates"]) == 2:
        assert plan["looks"] == [3, 8] and len(rec.seeds) in (3, 8)
        if len(rec.seeds) == 3:  # decided early: a clear win, or the incumbent behind
            assert rec.p_value < 0.01 if rec.beyond_noise else rec.difference < 0
    else:  # the default led the race: measured on the first look's seeds, nothing tested
        assert len(rec.seeds) == 3 and rec.recommends_default
    if not rec.recommends_default:
        low, high = rec.difference_ci
        assert low > 0 and low <= rec.difference <= high and rec.difference >= 0.5
    row = pair_rows(storage)[0]
    assert row["rounds"] == finished(trials) and row["stopped"] == "settled"
    assert row["incumbent_seeds"] == state.incumbent.n
    exported = json.loads(render([row], "json"))[0]
    assert {"rounds", "stopped", "configurations", "confirmed_difference_ci"} <= set(exported)
    assert f"{row['rounds']} rounds" in status_table([row]) and "settled" in status_table([row])


def test_a_joining_worker_goes_on_with_a_race(opts) -> None:
    # --confirm 0: the joining worker is to continue the race; with a confirmation, the run's
    # plan (made at the cap of 8) would no longer match and the worker would wait for a new one.
    o = opts(pairs="0-1", trials=8, confirm=0)
    tune(o, say=lambda _m: None)
    before = trials_of(o.storage, "tiny/0-1")
    assert finished(before) == 8 and race_state(before).stop_reason(8) == "cap"
    joined = opts(pairs="0-1", trials=CAP, confirm=0)
    join_run(joined, None, say=lambda _m: None, own=("trials",))
    after = trials_of(o.storage, "tiny/0-1")
    assert 8 < finished(after) < CAP
    # The rounds it found are kept as they were, and the race went on from them.
    assert [(t.number, t.value, t.params) for t in before if t.state == TrialState.COMPLETE] == [
        (t.number, t.value, t.params) for t in after[: len(before)]
        if t.state == TrialState.COMPLETE
    ]  # fmt: skip
    _check_rounds(after)
    assert race_state(after).settled


def test_batched_rounds_keep_the_race_in_order(opts) -> None:
    # --confirm 0: only the race's rounds are looked at here.
    o = opts(pairs="0-1", trials=30, batch_trials=3, confirm=0)
    tune(o, say=lambda _m: None)
    trials = trials_of(o.storage, "tiny/0-1")
    assert finished(trials) <= 30
    assert any(t.user_attrs.get("batch_trials") == 3 for t in trials)
    _check_rounds(trials)


def test_a_study_keeps_the_strategy_it_was_run_with(opts) -> None:
    o = opts(pairs="0-1", trials=3, confirm=0)  # --confirm 0: only the set-up matters here
    tune(o, say=lambda _m: None)
    digest = db_digest(o.storage)
    with pytest.raises(DkdError, match=r"--strategy race, this run asks for --strategy fixed"):
        tune(opts(pairs="0-1", trials=3, confirm=0, strategy="fixed"), say=lambda _m: None)
    assert db_digest(o.storage) == digest
    # A study stored before strategies existed was run by the fixed pipeline: a fixed run goes
    # on with it, a race is refused.
    engine = sqlalchemy.create_engine(o.storage)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM study_user_attributes WHERE key = 'strategy'"))
    engine.dispose()
    with pytest.raises(DkdError, match=r"--strategy fixed, this run asks for --strategy race"):
        tune(o, say=lambda _m: None)
    tune(opts(pairs="0-1", trials=4, confirm=0, strategy="fixed"), say=lambda _m: None)
    assert finished(trials_of(o.storage, "tiny/0-1")) == 4
