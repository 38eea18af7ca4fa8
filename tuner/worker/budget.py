"""The trial budget, counted in the database: N finished (COMPLETE + PRUNED) trials per study
(the counting queries are tuner.store.db's).

Nothing is counted in memory, so a rerun, a second process or another machine all top a study up
to the same N and never past it. The rule that makes "never past" hold under concurrency: a
worker first claims a trial (optuna's ask makes it RUNNING), then keeps it only if the finished
trials plus the RUNNING ones claimed before it leave room; otherwise the claim is surplus and is
closed at once as FAIL with ``surplus`` set (such trials carry no parameters and are neither
counted nor retried). Failed trials do not count; their configuration is enqueued again, up to
``retries`` more attempts, so a crash or a NaN does not silently drop a point of the search.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.store.adapter import fixed_params, storage_of, trial_id_of
from tuner.store.records import DEFAULT_ATTR
from tuner.strategies import STRATEGIES

#: Trial user attrs carried over when a failed configuration is enqueued again: the default mark
#: and what makes a round of any strategy that round (a raced round's seed index).
_CARRIED = (DEFAULT_ATTR, *dict.fromkeys(a for s in STRATEGIES.values() for a in s.round_attrs))


def claim_is_within_budget(study: optuna.Study, trial_id: int, budget: int) -> bool:
    """True when the RUNNING trial ``trial_id`` fits in the budget (see the module docstring).

    Claims are ordered by (start time, number): ``ask`` stamps the start when it creates a trial
    or pops a waiting one, inside the transaction that claims it.
    """
    storage = storage_of(study)
    me = storage.get_trial(trial_id)
    key = (me.datetime_start, me.number)
    trials = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    )
    taken = sum(
        1
        for t in trials
        if t.state != TrialState.RUNNING
        or (trial_id_of(t) != trial_id and (t.datetime_start, t.number) < key)
    )
    return taken < budget


def enqueue_retry(study: optuna.Study, failed: FrozenTrial, retries: int) -> bool:
    """Enqueue a failed trial's configuration again, if it has attempts left. True if enqueued."""
    attempt = int(failed.user_attrs.get("attempt", 1))
    # An enqueued trial (a default, a retry) keeps its whole configuration in fixed_params, also
    # when its worker died before suggesting all of it (a heartbeat found it stale).
    params = fixed_params(failed) or failed.params
    if attempt > retries or not params or failed.user_attrs.get("surplus"):
        return False
    attrs: dict[str, Any] = {k: failed.user_attrs[k] for k in _CARRIED if k in failed.user_attrs}
    attrs.update(retry_of=failed.number, attempt=attempt + 1)
    study.enqueue_trial(dict(params), user_attrs=attrs)
    return True


def enqueue_missing_retries(study: optuna.Study, retries: int) -> int:
    """Retry failed trials that have no retry yet (e.g. a worker that died mid-trial, once its
    trial was marked FAIL). Run by the process that starts a run, before its workers."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return sum(
        enqueue_retry(study, t, retries)
        for t in trials
        if t.state == TrialState.FAIL and t.number not in retried
    )
