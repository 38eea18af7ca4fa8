"""The trial budget, counted in the database: N finished (COMPLETE + PRUNED) trials per pair study.

Nothing is counted in memory, so a rerun, a second process or another machine all top a study up
to the same N and never past it. The rule that makes "never past" hold under concurrency: a
worker first claims a trial (optuna's ask makes it RUNNING), then keeps it only if the finished
trials plus the RUNNING ones claimed before it leave room; otherwise the claim is surplus and is
closed at once as FAIL with ``surplus`` set (such trials carry no parameters and are neither
counted nor retried). Failed trials do not count; their configuration is enqueued again, up to
``retries`` more attempts, so a crash or a NaN does not silently drop a point of the search.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

#: Trial user attrs carried over when a failed configuration is enqueued again.
_CARRIED = ("default",)


@dataclass
class Counts:
    """Trials of one study by state (surplus claims excluded from ``failed``)."""

    complete: int = 0
    pruned: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    def left(self, budget: int) -> int:
        """Trials still to start: the budget minus finished and running ones (never below 0)."""
        return max(0, budget - self.finished - self.running)


def count_trials(
    storage: optuna.storages.RDBStorage, study_ids: Iterable[int]
) -> dict[int, Counts]:
    """Counts per study in one query (a worker asks before every trial, for every pair).

    Reads optuna's ``trials`` table directly: the public API would load every trial with its
    params and attrs, for 45 pairs at each pick.
    """
    ids = list(study_ids)
    out = {i: Counts() for i in ids}
    if not ids:
        return out
    surplus = sqlalchemy.text(
        "SELECT t.study_id, count(*) FROM trials t JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'surplus' WHERE t.study_id IN ({}) "
        "GROUP BY t.study_id".format(",".join(str(int(i)) for i in ids))
    )
    by_state = sqlalchemy.text(
        "SELECT study_id, state, count(*) FROM trials WHERE study_id IN ({}) "
        "GROUP BY study_id, state".format(",".join(str(int(i)) for i in ids))
    )
    with storage.engine.connect() as conn:
        for study_id, state, n in conn.execute(by_state):
            name = state.name if isinstance(state, TrialState) else str(state)
            field = {
                "COMPLETE": "complete",
                "PRUNED": "pruned",
                "RUNNING": "running",
                "WAITING": "waiting",
                "FAIL": "failed",
            }[name]
            setattr(out[study_id], field, getattr(out[study_id], field) + n)
        for study_id, n in conn.execute(surplus):
            out[study_id].failed -= n
    return out


def best_gain(storage: optuna.storages.RDBStorage, study_ids: Iterable[int]) -> float | None:
    """The best gain of any COMPLETE trial in these studies (one query, for the progress line)."""
    ids = ",".join(str(int(i)) for i in study_ids)
    if not ids:
        return None
    query = sqlalchemy.text(
        "SELECT max(v.value) FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id "
        f"WHERE t.study_id IN ({ids}) AND t.state = 'COMPLETE'"
    )
    with storage.engine.connect() as conn:
        value = conn.execute(query).scalar()
    return None if value is None else float(value)


def claim_is_within_budget(study: optuna.Study, trial_id: int, budget: int) -> bool:
    """True when the RUNNING trial ``trial_id`` fits in the budget (see the module docstring).

    Claims are ordered by (start time, number): ``ask`` stamps the start when it creates a trial
    or pops a waiting one, inside the transaction that claims it.
    """
    storage = study._storage
    me = storage.get_trial(trial_id)
    key = (me.datetime_start, me.number)
    trials = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    )
    taken = sum(
        1
        for t in trials
        if t.state != TrialState.RUNNING
        or (t._trial_id != trial_id and (t.datetime_start, t.number) < key)
    )
    return taken < budget


def enqueue_retry(study: optuna.Study, failed: FrozenTrial, retries: int) -> bool:
    """Enqueue a failed trial's configuration again, if it has attempts left. True if enqueued."""
    attempt = int(failed.user_attrs.get("attempt", 1))
    # An enqueued trial (a default, a retry) keeps its whole configuration in fixed_params, also
    # when its worker died before suggesting all of it (a heartbeat found it stale).
    params = failed.system_attrs.get("fixed_params") or failed.params
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
