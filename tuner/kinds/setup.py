"""Study set-up for every kind (docs/design.md §4–5): check, create, record, enqueue, ready.

Exactly-once set-up: the database's unique study name decides who sets a study up. The process
whose ``create_new_study`` succeeds writes the kind's attrs, enqueues its trials, and writes
``ready`` last; any other process that finds the study waits for ``ready`` before it reads the
attrs or asks for a trial, so the default trials are both present once and run first. If the
creator died before ``ready``, a waiter finishes the set-up idempotently after a timeout.

A fixed kind's queue may grow on a later run (more seeds, a new best to confirm): the process
that starts the run enqueues what is missing (:func:`enqueue`) once the study is ready and the
failed trials' retries are queued (a failed trial without one would otherwise be queued twice).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.study import StudyDirection

from objectives import FederationBundle
from tuner.errors import StorageError
from tuner.kinds import KINDS, Task
from tuner.kinds.growth import Growth, plan
from tuner.store.adapter import study_id_of
from tuner.store.records import RunRecord

#: Where Optuna keeps a study's metric names (``Study.set_metric_names``).
METRIC_NAMES = "study:metric_names"
#: Seconds to wait for another process to finish setting up a study before taking over.
READY_TIMEOUT_S = 60.0


def wait_ready(
    storage: optuna.storages.RDBStorage, study_id: int, timeout: float = READY_TIMEOUT_S
) -> dict[str, Any] | None:
    """The study's user attrs once its creator wrote ``ready``; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = storage.get_study_user_attrs(study_id)
        if attrs.get("ready"):
            return attrs
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def check_existing(
    storage: optuna.storages.RDBStorage, url: str, tasks: Sequence[Task]
) -> dict[str, Growth]:
    """Refuse (StorageError, nothing written) if an existing study conflicts with its task, or
    a task's federation name is stored under another hash that the config does not grow
    (:func:`~.growth.plan`). Returns each federation's growth, for :func:`~.growth.grow` to
    write once the run's bundle is loaded."""
    studies = storage.get_all_studies()
    growths: dict[str, Growth] = {}
    for config in {t.config.name: t.config for t in tasks}.values():
        growths[config.name] = growth = plan(config.name, config, studies, url)
        if growth.refusal:
            raise StorageError(growth.refusal)
    kept = {s.study_name for g in growths.values() for s in g.keep}
    existing = {s.study_name: s for s in studies}
    for task in tasks:
        if task.study not in existing:
            continue
        attrs = existing[task.study].user_attrs
        if not attrs.get("ready"):
            attrs = wait_ready(storage, study_id_of(existing[task.study])) or attrs
        if "federation_hash" not in attrs:
            continue  # its creator died before writing it: setup_study takes over and checks
        if task.study in kept:  # its pair is unchanged: it joins the config's federation hash
            attrs = {**attrs, "federation_hash": task.config.federation_hash}
        reason = KINDS[task.kind].conflict(task.study, attrs, task, url)
        if reason:
            raise StorageError(reason)
    return growths


def setup_study(
    storage: optuna.storages.RDBStorage, url: str, task: Task, bundle: FederationBundle
) -> int:
    """Create (or join) the task's study; return its id once its trials are enqueued."""
    kind = KINDS[task.kind]
    try:
        study_id = storage.create_new_study([StudyDirection.MAXIMIZE], task.study)
        created = True
    except DuplicatedStudyError:
        study_id = storage.get_study_id_from_name(task.study)
        created = False
    attrs = None if created else wait_ready(storage, study_id)
    if attrs is None:  # we created it, or its creator died before finishing
        for key, value in kind.record(task, bundle).items():
            storage.set_study_user_attr(study_id, key, value)
        enqueue(storage, task)
        storage.set_study_user_attr(study_id, "ready", True)  # last: releases the waiters
        attrs = storage.get_study_user_attrs(study_id)
    reason = kind.conflict(task.study, attrs, task, url)  # a concurrent creator may differ
    if reason:
        raise StorageError(reason)
    name_metric(storage, study_id, task)
    return study_id


def name_metric(storage: optuna.storages.RDBStorage, study_id: int, task: Task) -> None:
    """Record the kind's metric name (once; studies of older runs get it on their next run)."""
    metric = [KINDS[task.kind].metric]
    if storage.get_study_system_attrs(study_id).get(METRIC_NAMES) != metric:
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.load_study(study_name=task.study, storage=storage).set_metric_names(metric)


def enqueue(storage: optuna.storages.RDBStorage, task: Task) -> int:
    """Enqueue the trials the task's kind wants and the study lacks; return how many."""
    study = optuna.load_study(study_name=task.study, storage=storage)
    todo = KINDS[task.kind].queue(task, study.get_trials(deepcopy=False))
    for params, attrs in todo:
        study.enqueue_trial(params, user_attrs=attrs)
    return len(todo)


def record_run(storage: optuna.storages.RDBStorage, study_id: int, run: RunRecord) -> None:
    """Record the latest run's settings on its study (written only where they changed), which
    ``dkd-tune worker`` reads to join it."""
    if RunRecord.from_attrs(storage.get_study_user_attrs(study_id)) != run:
        for key, value in run.to_attrs().items():
            storage.set_study_user_attr(study_id, key, value)
