"""The window between a heartbeat check's FAIL and its retry's enqueue (two transactions): a
worker with nothing else to do must not stop inside it, or a fixed kind's run (a confirmation
seed) is left unserved and the pair ends "failed: some seed runs failed" (seen once in CI after a
SIGKILL, a Ctrl-C and a rerun). Here the window is made wide on purpose: the real retry function,
called two seconds late."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from tuner import tune
from tuner.kinds import KINDS, Task
from tuner.kinds.confirmation import runs
from tuner.kinds.setup import enqueue
from tuner.run.start import run_tasks, start
from tuner.store.db import open_storage
from tuner.worker import heartbeat as heartbeat_module

SEEDS = (2_000_000_011, 2_000_000_012)


def test_a_worker_waits_for_the_retry_its_check_is_enqueuing(opts, monkeypatch) -> None:
    # heartbeat 1 s / grace 2 s: the dead worker's run is found quickly (a test about the window)
    o = opts(trials=2, heartbeat_interval=1, heartbeat_grace=2)
    tune(o, say=lambda _m: None)  # the pair study, its two defaults (and their confirmation)
    storage = open_storage(o.storage)
    pair = optuna.load_study(study_name="tiny/0-1", storage=storage)
    default = next(t for t in pair.get_trials() if t.user_attrs.get("default") == "a")
    config = KINDS["pair"].task_from("tiny/0-1", pair.user_attrs, None).config
    name = "tiny/0-1/window"
    first = Task(name, "confirm", (0, 1), config, wanted=tuple(runs(default.number,
                                                                     default.params, SEEDS[:1])))
    start(o, [first], ["cpu"], lambda _m: None, "first seed")
    # A second seed, claimed by a worker that dies at once (RUNNING, never a beat).
    second = Task(name, "confirm", (0, 1), config, wanted=tuple(runs(default.number,
                                                                      default.params, SEEDS)))
    enqueue(storage, second)
    study = optuna.load_study(study_name=name, storage=storage)
    dead = study.ask()
    assert dead.params == {} and study.get_trials()[-1].state == TrialState.RUNNING

    real = heartbeat_module.enqueue_retry

    def late(*args, **kwargs):
        time.sleep(2.0)  # the FAIL is committed; the retry is not there yet
        return real(*args, **kwargs)

    monkeypatch.setattr(heartbeat_module, "enqueue_retry", late)
    ids = {name: study._study_id}
    run_tasks(o, [second], ["cpu"], storage, ids, lambda _m: None)
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    done = sorted(t.params["seed"] for t in trials if t.state == TrialState.COMPLETE)
    assert done == list(SEEDS)  # the dead worker's seed was retried and run in this same run
    assert [t.state for t in trials if t.number == dead.number] == [TrialState.FAIL]
