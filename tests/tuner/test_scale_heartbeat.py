"""Heartbeats on the real storages: a RUNNING trial whose worker went silent is failed after the
grace period and its configuration enqueued again, once, whoever checks; a trial that still
beats, or that this process runs, is left alone; a worker whose trial was failed meanwhile ends
it as "lost" instead of crashing."""

from __future__ import annotations

import dataclasses
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from tuner_helpers import trials_of

from objectives import load_config, prepare_federation
from tuner import parse_space
from tuner.kinds import Task
from tuner.options import check_heartbeat
from tuner.store.storage import get_storage
from tuner.worker.heartbeat import Heartbeat
from tuner.worker.lifecycle import LOST, Settings, run_one

DEFAULT = {"temperature": 1.0, "alpha": 0.5, "divergence": "kl", "transfer_set": "public"}


def _study(url: str) -> tuple[optuna.storages.RDBStorage, optuna.Study]:
    storage = get_storage(url)
    study = optuna.create_study(storage=storage, study_name="hb/0-1", direction="maximize")
    return storage, study


def test_silent_trials_are_failed_once_and_retried(backend_url: str) -> None:
    storage, study = _study(backend_url)
    space = parse_space({})
    # 1: a default popped from the queue by a worker that died before suggesting anything.
    study.enqueue_trial({**DEFAULT, "position": "a"}, user_attrs={"default": "a", "attempt": 1})
    popped = study.ask()
    # 2: a trial that beat a few times, then its worker died.
    dead = study.ask()
    dead_params = space.suggest(dead)
    storage.record_heartbeat(dead._trial_id)
    # 3: a trial whose worker lives and beats; 4: a trial this very process runs (never beats).
    live, mine = study.ask(), study.ask()
    storage.record_heartbeat(live._trial_id)
    watch = {study._study_id: study.study_name}
    checker = Heartbeat(storage, watch, lambda: [mine._trial_id], interval=1, grace=3)
    # A second checker (another process); ``mine`` stands there for a trial that beats.
    other = Heartbeat(storage, watch, lambda: [mine._trial_id], interval=1, grace=3)

    assert checker.reap(now=100.0) == [] and other.reap(now=100.0) == []  # first look: no verdict
    time.sleep(1.1)  # SQLite stamps whole seconds: the next beat must land in another one
    storage.record_heartbeat(live._trial_id)
    assert sorted(checker.reap(now=103.5)) == sorted([popped._trial_id, dead._trial_id])
    assert other.reap(now=103.5) == []  # a second checker finds them finished: no double retry

    trials = {t._trial_id: t for t in trials_of(backend_url, study.study_name)}
    for trial in (popped, dead):
        frozen = trials[trial._trial_id]
        assert frozen.state == TrialState.FAIL
        assert frozen.user_attrs["fail_reason"].startswith(LOST)
    assert trials[live._trial_id].state == TrialState.RUNNING
    assert trials[mine._trial_id].state == TrialState.RUNNING
    retries = {t.user_attrs["retry_of"]: t for t in trials.values() if "retry_of" in t.user_attrs}
    assert set(retries) == {popped.number, dead.number}
    assert retries[popped.number].system_attrs["fixed_params"] == {**DEFAULT, "position": "a"}
    assert retries[popped.number].user_attrs == {"default": "a", "retry_of": 0, "attempt": 2}
    assert retries[dead.number].system_attrs["fixed_params"] == dead_params
    assert all(t.state == TrialState.WAITING for t in retries.values())


def test_a_worker_whose_trial_was_failed_meanwhile_goes_on(tiny, tmp_path) -> None:
    """The worker was silent past the grace (a stalled machine); another worker's check failed its
    trial and queued the retry. Its result is dropped, the trial ends as "lost", no crash."""
    config = load_config(tiny["config"])
    bundle = prepare_federation(config, directory=tiny["bundles"])
    recipe = dataclasses.replace(config.kd, epochs=40)  # long enough to be failed mid-way
    storage, study = _study(f"sqlite:///{tmp_path / 'lost.db'}")
    box: dict = {}

    def run() -> None:
        task = Task(study.study_name, "pair", (0, 1), dataclasses.replace(config, kd=recipe),
                    parse_space({}), budget=5)  # fmt: skip
        box["outcome"] = run_one(study, task, bundle, Settings(device="cpu", seed=0, retries=2))

    worker = threading.Thread(target=run)
    worker.start()
    checker = Heartbeat(storage, {study._study_id: study.study_name}, lambda: [], grace=30)
    while True:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running and running[0].params:
            break
        assert worker.is_alive(), box
        time.sleep(0.01)
    assert checker.fail(running[0]._trial_id, study._study_id)  # what reap does when stale
    worker.join()
    assert box["outcome"].state == "lost" and box["outcome"].reason.startswith(LOST)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert [t.user_attrs.get("retry_of") for t in trials[1:]] == [0]


@pytest.mark.parametrize(
    ("interval", "grace", "phrase"),
    [(0.5, 3, "--heartbeat-interval 0.5 must be >= 1"), (5, 8, "at least twice")],
)
def test_settings_under_which_a_live_worker_could_look_dead_are_refused(
    interval: float, grace: float, phrase: str
) -> None:
    with pytest.raises(Exception) as err:
        check_heartbeat(interval, grace)
    assert phrase in str(err.value) and "\n" not in str(err.value)
