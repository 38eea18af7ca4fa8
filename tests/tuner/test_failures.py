"""Failed trials: they do not count, their configuration is tried again, and a pair whose
trials always fail (NaN loss) stops with one line instead of looping."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from tuner_helpers import finished, trials_of

from tuner import RunError, parse_space, tune
from tuner.store.storage import get_storage


def test_failed_configuration_is_retried_and_not_counted(opts) -> None:
    o = opts(trials=2)
    tune(o, say=lambda _m: None)
    # A trial that failed mid-run (say its worker crashed), with a configuration of the space.
    study = optuna.load_study(study_name="tiny/0-1", storage=get_storage(o.storage))
    trial = study.ask()
    params = parse_space({}).suggest(trial)
    trial.set_user_attr("fail_reason", "worker lost")
    study.tell(trial, state=TrialState.FAIL)

    tune(opts(trials=3), say=lambda _m: None)
    trials = trials_of(o.storage, "tiny/0-1")
    assert finished(trials) == 3  # the FAIL did not count towards the 3
    retry = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retry) == 1
    assert retry[0].params == params
    assert retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry[0].user_attrs["attempt"] == 2


def test_nan_loss_marks_failed_retries_then_gives_up(opts) -> None:
    o = opts(trials=2, overrides=["kd.lr=1e30"], retries=1)
    with pytest.raises(RunError) as err:
        tune(o, say=lambda _m: None)
    assert "tiny/0-1" in str(err.value) and "\n" not in str(err.value)
    trials = trials_of(o.storage, "tiny/0-1")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) >= 5 and finished(trials) == 0
    assert all("NaN or infinite" in t.user_attrs["fail_reason"] for t in failed)
    # Each configuration got exactly one more attempt (retries=1), and no more.
    retried = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    assert retried
    for number, t in retried.items():
        # A retry that ran has the same parameters; one still queued holds them fixed.
        assert t.system_attrs["fixed_params"] == trials[number].params
        assert t.state == TrialState.WAITING or t.params == trials[number].params
        assert t.user_attrs["attempt"] == 2
        assert "retry_of" not in trials[number].user_attrs
