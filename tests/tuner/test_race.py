"""The race's rule (tuner.search.race) on real Optuna trials, and what the race's sampler sees."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.read.decision import decide, difference_ci, paired_p_value
from tuner.search import race
from tuner.search.race import SEED_ATTR, race_state, seen_by_sampler
from tuner.search.sampler import RaceSampler, _seen, make_sampler

DIST = {"temperature": FloatDistribution(0.25, 16.0, log=True)}


def _round(number: int, t: float, seed: int, value: float | None, state=TrialState.COMPLETE,
           default: bool = False, retry_of: int | None = None):  # fmt: skip
    attrs = {SEED_ATTR: seed, **({"default": "a"} if default else {})}
    if retry_of is not None:
        attrs["retry_of"] = retry_of
    trial = create_trial(
        params={"temperature": t}, distributions=DIST, user_attrs=attrs, state=state,
        value=value if state == TrialState.COMPLETE else None,
    )  # fmt: skip
    trial.number = number
    return trial


def _trials(*rounds: tuple) -> list:
    return [_round(i, *r) for i, r in enumerate(rounds)]


def test_first_two_configurations_tie_and_the_better_one_runs_a_second_seed() -> None:
    s = race_state(_trials((1.0, 0, 5.0, TrialState.COMPLETE, True), (2.0, 0, 6.0)))
    assert s.incumbent.params == {"temperature": 2.0}
    assert [(c.params["temperature"], j) for c, j in s.needed] == [(2.0, 1)]
    assert s.streak == 0  # the newest configuration leads: no loss since it came


def test_a_challenger_that_keeps_up_doubles_its_seeds_up_to_the_incumbents() -> None:
    rounds = [(2.0, j, 6.0) for j in range(4)] + [(3.0, 0, 6.5)]
    s = race_state(_trials(*rounds))
    assert s.incumbent.params["temperature"] == 2.0 and s.incumbent.n == 4
    assert [(c.params["temperature"], j) for c, j in s.needed] == [(3.0, 1)]
    s = race_state(_trials(*rounds, (3.0, 1, 6.5)))
    assert [j for _, j in s.needed] == [2, 3]  # 2 seeds -> 4: one batch of two rounds
    s = race_state(_trials(*rounds, (3.0, 1, 6.5), (3.0, 2, 6.5), (3.0, 3, 6.5)))
    # As many seeds and a higher mean: the challenger is the incumbent, and runs one seed more
    # (the duel is decided); the old incumbent is out.
    assert s.incumbent.params["temperature"] == 3.0
    assert [(c.params["temperature"], j) for c, j in s.needed] == [(3.0, 4)]
    assert not s.alive(next(c for c in s.configs if c.params["temperature"] == 2.0))


def test_a_challenger_behind_on_shared_seeds_is_out_and_the_race_settles() -> None:
    rounds = [(2.0, j, 6.0) for j in range(3)]
    losers = [(3.0 + k / 10, 0, 5.0) for k in range(race.PATIENCE - 1)]
    s = race_state(_trials(*rounds, *losers))
    assert not s.needed and s.streak == race.PATIENCE - 1 and not s.settled
    last = (15.0, 0, 5.9)
    s = race_state(_trials(*rounds, *losers, last))
    assert s.streak == race.PATIENCE and len(s.configs) < race.MIN_CONFIGURATIONS
    assert not s.settled  # too few configurations tried yet
    earlier = [(0.3 + k / 100, 0, 4.0) for k in range(race.MIN_CONFIGURATIONS - race.PATIENCE - 1)]
    s = race_state(_trials(*earlier, *rounds, *losers, last))
    assert len(s.configs) == race.MIN_CONFIGURATIONS
    assert s.settled and s.stop_reason(200) == "settled"
    # A round still running keeps the race open: it may change the answer.
    running = (14.0, 0, None, TrialState.RUNNING)
    s = race_state(_trials(*earlier, *rounds, *losers, last, running))
    assert not s.settled and s.streak == 0


def test_cap_pruned_first_rounds_and_failed_rounds() -> None:
    rounds = [(2.0, 0, 6.0), (2.0, 1, 6.0), (3.0, 0, None, TrialState.PRUNED)]
    s = race_state(_trials(*rounds))
    assert s.rounds == 3 and s.stop_reason(3) == "cap" and s.stop_reason(4) is None
    assert s.streak == 1  # pruned: lost early
    # A failed round whose retry waits is pending; one with no retry left breaks its
    # configuration (it is not enqueued again).
    failed = (3.0, 0, None, TrialState.FAIL)
    waiting = _trials(*rounds[:2], failed, (3.0, 0, None, TrialState.WAITING, False, 2))
    assert race_state(waiting).pending == 1 and race_state(waiting).streak == 0
    broken = race_state(_trials(*rounds[:2], failed))
    assert broken.streak == 1 and not broken.needed


def test_repeated_proposals_count_as_losses_and_the_sampler_sees_pruned_rounds() -> None:
    # Seen on real rounds: the GP, blind to pruned trials, proposed one pruned corner again and
    # again; the race ran to its cap. Repeats now count as proposals that brought nothing.
    rounds = [(2.0, j, 6.0) for j in range(3)]
    corner = (16.0, 0, None, TrialState.PRUNED)
    s = race_state(_trials(*rounds, *[corner] * race.MIN_CONFIGURATIONS))
    assert len(s.configs) == 2 and s.streak == race.MIN_CONFIGURATIONS and s.settled
    assert s.rounds == 3 + race.MIN_CONFIGURATIONS and s.proposals == 1 + race.MIN_CONFIGURATIONS
    pruned = _round(3, 16.0, 0, None, TrialState.PRUNED)
    pruned.intermediate_values = {1: -11.8, 2: -12.0}
    seen = seen_by_sampler([*_trials(*rounds), pruned])
    assert [(t.state, t.value) for t in seen] == [
        (TrialState.COMPLETE, 6.0),
        (TrialState.COMPLETE, -12.0),
    ]  # pruned: complete at its last reported gain, for the sampler only


def test_the_sampler_sees_one_point_per_configuration_at_its_mean() -> None:
    trials = _trials((2.0, 0, 6.0), (2.0, 1, 8.0), (2.0, 2, 7.0), (3.0, 0, 5.0),
                     (2.0, 3, None, TrialState.RUNNING))  # fmt: skip
    seen = seen_by_sampler(trials)
    assert [(t.params["temperature"], t.value) for t in seen] == [(2.0, 7.0), (3.0, 5.0)]
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    view = _seen(study)
    assert [t.value for t in view.get_trials(states=(TrialState.COMPLETE,))] == [7.0, 5.0]
    assert len(study.get_trials()) == 5  # the study itself is unchanged


@pytest.mark.parametrize("name", ["tpe", "gp"])
def test_the_race_sampler_proposes_within_the_space(name: str) -> None:
    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler(name, object(), 0, race=True))  # fmt: skip
    assert isinstance(study.sampler, RaceSampler)
    for i in range(8):
        trial = study.ask()
        t = trial.suggest_float("temperature", 0.25, 16.0, log=True)
        trial.set_user_attr(SEED_ATTR, 0)
        study.tell(trial, -abs(t - 2.0) + 0.01 * i)
    assert all(0.25 <= t.params["temperature"] <= 16.0 for t in study.trials)


def test_the_decision_needs_both_the_test_and_the_minimum_gain() -> None:
    default = [5.0, 5.2, 4.9, 5.1, 5.0, 5.3]
    small = [d + 0.3 + e for d, e in zip(default, (0.0, 0.02, -0.01, 0.01, 0.0, 0.01), strict=True)]
    assert paired_p_value(small, default) < 0.05
    assert decide(small, default, 0.0)[0] and not decide(small, default, 0.5)[0]
    big = [d + 1.0 for d in default[:-1]] + [default[-1] + 0.2]
    assert decide(big, default, 0.5)[0]
    noisy = [d + s for d, s in zip(default, (2.0, -1.8, 1.9, -1.5, 1.2, 0.1), strict=True)]
    assert not decide(noisy, default, 0.0)[0]


def test_the_confidence_interval_against_a_float64_reference() -> None:
    import numpy as np
    from scipy import stats

    a = [7.1, 6.4, 7.9, 6.8, 7.3]
    b = [6.0, 6.2, 6.9, 6.1, 6.7]
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    half = stats.t.ppf(0.95, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    low, high = difference_ci(a, b)
    assert low == pytest.approx(d.mean() - half, abs=1e-12)
    assert high == pytest.approx(d.mean() + half, abs=1e-12)
    # Its lower end is the one-sided test's bound: above 0 exactly when p < 0.05.
    assert (low > 0) == (paired_p_value(a, b) < 0.05)
