"""A race's sequential confirmation (tuner.read.decision, tuner.read.answer.confirmation_state):
decided on the first look's 3 fresh seeds when that is clear, on all 8 otherwise, with the error
budget split over the looks; on studies in a real SQLite file, checked against a float64
reference of the paired t-test."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import create_trial
from scipy import stats

from tuner.read.answer import answer_fields, confirmation_state
from tuner.read.decision import FIRST_LEVEL, LEVEL, look_levels
from tuner.store.records import PLAN_ATTR
from tuner.strategies import STRATEGIES
from tuner.strategies.race import FIRST_LOOK
from tuner.views.tables import recommended

SEEDS = list(range(2_000_000_011, 2_000_000_019))  # 8 fresh seeds
DEFAULT = [5.0, 5.4, 4.8, 5.2, 5.1, 4.9, 5.3, 5.0]
PAIR_DIST = {
    "temperature": FloatDistribution(0.25, 16.0, log=True),
    "alpha": FloatDistribution(0.0, 1.0),
    "position": CategoricalDistribution(["a", "b"]),
}
RUN_DIST = {"candidate": IntDistribution(0, 10**9), "seed": IntDistribution(0, 2**62)}


def _studies(tmp_path, tuned: list[float], plan_looks: list[int] | None, default=DEFAULT):
    """A pair study (the default #0, the incumbent #1) with a confirmation plan, and its
    confirmation study holding runs at the given gains (one per seed, as many as given)."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'run.db'}")
    pair = optuna.create_study(study_name="f/0-1", storage=storage, direction="maximize")
    pair.add_trial(
        create_trial(
            params={"temperature": 1.0, "alpha": 0.5, "position": "a"},
            distributions=PAIR_DIST,
            value=5.0,
            user_attrs={"default": "a"},
        )
    )
    pair.add_trial(create_trial(params={"temperature": 4.0, "alpha": 0.9, "position": "a"},
                                distributions=PAIR_DIST, value=8.0))  # fmt: skip
    plan = {"candidates": [1, 0], "seeds": SEEDS}
    if plan_looks:
        plan["looks"] = plan_looks
    pair.set_user_attr(PLAN_ATTR, plan)
    pair.set_user_attr("pair", [0, 1])
    runs = optuna.create_study(study_name="f/0-1/confirm", storage=storage, direction="maximize")
    for candidate, gains in ((1, tuned), (0, default[: len(tuned)])):
        for seed, gain in zip(SEEDS, gains, strict=False):
            runs.add_trial(create_trial(
                params={"candidate": candidate, "seed": seed}, distributions=RUN_DIST,
                value=gain, user_attrs={"accuracy_after": 80.0 + gain, "forgetting": 0.1},
            ))  # fmt: skip
    (frozen,) = [s for s in storage.get_all_studies() if s.study_name == "f/0-1"]
    return frozen, pair.get_trials(), runs.get_trials()


def _state(tmp_path, tuned, plan_looks=(3, 8), min_gain=0.5):
    study, trials, runs = _studies(tmp_path, list(tuned), list(plan_looks or []) or None)
    state = confirmation_state(study, trials, runs, None, LEVEL, min_gain=min_gain)
    return list(state.seeds), state.answer


def _p_float64(a, b) -> float:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    return float(stats.t.sf(t, len(d) - 1))


def test_the_looks_and_their_levels_spend_the_error_budget_once() -> None:
    race, fixed = STRATEGIES["race"], STRATEGIES["fixed"]
    assert race.looks(8) == [FIRST_LOOK, 8]
    assert race.looks(3) == [3] and fixed.looks(8) == [8]
    assert look_levels(1) == [LEVEL]
    assert look_levels(2) == [FIRST_LEVEL, pytest.approx(LEVEL - FIRST_LEVEL)]
    assert sum(look_levels(2)) == pytest.approx(LEVEL)


def test_a_clear_win_is_decided_on_the_first_look(tmp_path) -> None:
    tuned = [d + 3.0 + e for d, e in zip(DEFAULT, (0.0, 0.1, -0.1), strict=False)]
    seeds, rec = _state(tmp_path, tuned)
    assert seeds == SEEDS[:3] and rec.seeds == tuple(SEEDS[:3])
    assert rec.beyond_noise and rec.recommended.trial == 1
    assert rec.level == FIRST_LEVEL and rec.looks == (3, 8)
    assert rec.p_value == pytest.approx(_p_float64(tuned, DEFAULT[:3]), rel=1e-9)
    assert rec.p_value < FIRST_LEVEL and rec.difference == pytest.approx(3.0)


def test_a_candidate_behind_its_default_stops_at_the_first_look(tmp_path) -> None:
    tuned = [d - 0.6 + e for d, e in zip(DEFAULT, (0.3, -0.2, 0.1), strict=False)]
    seeds, rec = _state(tmp_path, tuned)
    assert seeds == SEEDS[:3] and not rec.beyond_noise
    assert rec.recommends_default and rec.seeds == tuple(SEEDS[:3])


def test_an_open_first_look_runs_every_seed_and_tests_at_the_rest_of_the_budget(tmp_path) -> None:
    # Ahead by ~0.9 pp with a spread: p ≈ 0.08 on 3 seeds (no decision at 0.01), p < 0.04 on 8.
    noise = (1.5, -0.2, 1.4, 0.8, 1.2, 0.3, 1.6, 0.7)
    tuned = [d + e for d, e in zip(DEFAULT, noise, strict=True)]
    first = _p_float64(tuned[:3], DEFAULT[:3])
    assert first > FIRST_LEVEL and sum(noise[:3]) > 0  # the case this test is about
    seeds, rec = _state(tmp_path, tuned[:3])
    assert seeds == SEEDS and rec is None  # the runs of the second look are wanted now
    (tmp_path / "all").mkdir()
    seeds, rec = _state(tmp_path / "all", tuned)
    assert seeds == SEEDS and rec.seeds == tuple(SEEDS) and rec.level == LEVEL - FIRST_LEVEL
    assert rec.p_value == pytest.approx(_p_float64(tuned, DEFAULT), rel=1e-9)
    assert rec.beyond_noise == (rec.p_value < LEVEL - FIRST_LEVEL) and rec.beyond_noise
    low, _ = rec.difference_ci
    assert low > 0  # the interval at the look's level agrees with its test


def test_the_minimum_gain_holds_at_every_look(tmp_path) -> None:
    # A sure but small gain (0.3 pp on every seed): never recommended with --min-gain 0.5, at
    # the first look the candidate is ahead, so the second look decides (against it).
    tuned = [d + 0.3 for d in DEFAULT]
    seeds, rec = _state(tmp_path, tuned)
    assert seeds == SEEDS and not rec.beyond_noise and rec.recommends_default


def test_a_plan_without_looks_decides_once_on_all_its_seeds(tmp_path) -> None:
    tuned = [d + 3.0 for d in DEFAULT[:3]]
    seeds, rec = _state(tmp_path, tuned, plan_looks=None)
    assert seeds == SEEDS and rec is None  # a fixed plan: every seed before any answer


def test_a_last_look_between_its_level_and_the_whole_budget_is_within_noise(tmp_path) -> None:
    # Ahead by 0.91 pp with p ≈ 0.041 over 8 seeds: below 0.05 but not below the last look's
    # 0.04, so the default is kept, and the status line says why (noise, not --min-gain).
    base = np.array([1.5, -0.2, 1.4, 0.8, 1.2, 0.3, 1.6, 0.7])
    noise = base.mean() + (base - base.mean()) * 2.01
    tuned = [d + float(e) for d, e in zip(DEFAULT, noise, strict=True)]
    _, rec = _state(tmp_path, tuned)
    assert LEVEL - FIRST_LEVEL < rec.p_value < LEVEL and rec.difference >= 0.5
    assert not rec.beyond_noise and len(rec.seeds) == 8
    row = answer_fields(rec)
    assert row["level"] == pytest.approx(LEVEL - FIRST_LEVEL)
    assert "within noise" in recommended(row) and "8 seeds" in recommended(row)
