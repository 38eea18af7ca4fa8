"""The tuner's pruners decide as documented: fed recorded gains at the evaluation points through a
real (in-memory) Optuna study, as tuner.worker.lifecycle reports them."""

from __future__ import annotations

import optuna
import pytest

from tuner.worker.pool import make_pruner

POINTS = 4
#: Five finished trials' gains at points 1..4: at point 2 (values 1..5) their 25th percentile is
#: 2.0 and their median 3.0; at point 3 (values 3..7) the 25th percentile is 4.0.
FINISHED = [[-8.0 + i, float(i), i + 2.0, i + 2.0] for i in range(1, 6)]


def _study(pruner_name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(pruner_name, POINTS))
    for gains in FINISHED:
        trial = study.ask()
        for step, gain in enumerate(gains, 1):
            trial.report(gain, step)
        study.tell(trial, gains[-1])
    return study


def _pruned_at(study: optuna.Study, gains: list[float]) -> int | None:
    """The point at which the study's pruner stops a trial with these gains (None: it ends)."""
    trial = study.ask()
    for step, gain in enumerate(gains, 1):
        trial.report(gain, step)
        if step < POINTS and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, gains[-1])
    return None


def test_quartile_never_prunes_at_the_first_point() -> None:
    # Far below every finished trial at point 1, as a trial with a high T often starts.
    assert _pruned_at(_study("quartile"), [-50.0, 4.0, 4.0, 4.0]) is None


def test_quartile_prunes_the_bottom_quarter_from_the_second_point() -> None:
    assert _pruned_at(_study("quartile"), [0.0, 1.5, 5.0, 5.0]) == 2
    # Optuna judges a trial by its best gain so far: 2.5 passes point 2, and is short at point 3.
    assert _pruned_at(_study("quartile"), [0.0, 2.5, 3.0, 5.0]) == 3


def test_quartile_keeps_a_trial_the_median_rule_prunes() -> None:
    below_median = [0.0, 2.5, 4.5, 4.5]  # above the bottom quarter, below the median at 2
    assert _pruned_at(_study("quartile"), below_median) is None
    assert _pruned_at(_study("median"), below_median) == 2


@pytest.mark.parametrize("name", ["quartile", "median"])
def test_no_pruning_before_five_trials_finished(name: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(name, POINTS))
    for gains in FINISHED[:4]:
        assert _pruned_at(study, gains) is None
    assert _pruned_at(study, [-9.0, -9.0, -9.0, -9.0]) is None
