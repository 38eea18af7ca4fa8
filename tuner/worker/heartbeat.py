"""Heartbeats: a worker killed in the middle of a trial (SIGKILL, a lost machine, the OOM killer)
must not leave that trial RUNNING for good, holding one slot of its study's budget.

Each worker process runs one :class:`Heartbeat` thread. Every ``interval`` seconds it

* beats for the trials this process is running (a row in optuna's ``trial_heartbeats`` table,
  stamped by the database), and
* looks at the RUNNING trials of the run's studies that belong to other processes: one whose beat
  has not changed for ``grace`` seconds is marked FAIL with the reason in ``fail_reason``, and its
  configuration is enqueued again (``budget.enqueue_retry``), so every study still ends with
  exactly its budget.

Optuna's own heartbeat runs only inside ``study.optimize``; we ask and tell, so we beat ourselves.
Staleness is judged by watching a beat *not change* on this process's monotonic clock, never by
comparing timestamps: machines' clocks differ, and SQLite's timestamps have one-second steps.
So a trial is failed at most ``grace + 2 * interval`` seconds after its worker's last beat (one
interval until the silence is first seen, plus one until the check after the grace runs out).
A trial whose worker died before its first beat has no row at all; it is judged the same way.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from tuner.options import HEARTBEAT_GRACE_S, HEARTBEAT_INTERVAL_S
from tuner.store.db import running_with_beats
from tuner.worker.budget import enqueue_retry


class Heartbeat:
    """The heartbeat thread of one worker process (see the module docstring).

    ``running`` returns the ids of the trials this process is running now; ``studies`` maps the
    study ids to watch to their names. Start it before the first trial, stop it after the last:
    while a worker waits for other workers' last trials, its thread is what fails a dead one.
    """

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        studies: dict[int, str],
        running: Callable[[], Iterable[int]],
        *,
        interval: float = HEARTBEAT_INTERVAL_S,
        grace: float = HEARTBEAT_GRACE_S,
        retries: int = 2,
    ) -> None:
        self.storage = storage
        self.studies = dict(studies)
        self.running = running
        self.interval = interval
        self.grace = grace
        self.retries = retries
        self.reaped: list[int] = []  # trial ids this process failed as stale
        self._seen: dict[int, tuple[object, float]] = {}  # trial id -> (beat, first seen with it)
        self._loaded: dict[int, optuna.Study] = {}
        #: Held while a stale trial is failed and its retry enqueued (two transactions): a worker
        #: about to stop takes it before its last look, so it never sees the trial FAIL and its
        #: retry not yet there (no work left) and stops with the retry unserved.
        self.failing = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dkd-tune-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def beat(self, trial_id: int) -> None:
        """Record that ``trial_id`` is alive (also called by a worker right after its claim)."""
        self.storage.record_heartbeat(trial_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # A failed beat or check (a database restart, a dropped connection) is tried again at
            # the next tick; the thread must outlive it, or this worker's trials would go stale.
            with contextlib.suppress(Exception):
                for trial_id in list(self.running()):
                    self.beat(trial_id)
            with contextlib.suppress(Exception):
                self.reap()
            self._stop.wait(self.interval)

    def reap(self, now: float | None = None) -> list[int]:
        """Fail (and retry) the other processes' trials whose beat stopped; return their ids."""
        now = time.monotonic() if now is None else now
        mine = set(self.running())
        stale: list[tuple[int, int]] = []
        current: dict[int, tuple[object, float]] = {}
        for trial_id, study_id, beat in self._running_trials():
            if trial_id in mine:
                continue
            last = self._seen.get(trial_id)
            if last is None or last[0] != beat:
                current[trial_id] = (beat, now)
                continue
            current[trial_id] = last
            if now - last[1] > self.grace:
                stale.append((trial_id, study_id))
        self._seen = current  # forget trials that finished
        failed = [trial_id for trial_id, study_id in stale if self.fail(trial_id, study_id)]
        self.reaped.extend(failed)
        return failed

    def _running_trials(self) -> list[tuple[int, int, object]]:
        """(trial id, study id, last beat or None) of the watched studies' RUNNING trials."""
        return running_with_beats(self.storage, self.studies)

    def fail(self, trial_id: int, study_id: int) -> bool:
        """Mark one stale trial FAIL and enqueue its retry; False if another process (a second
        checker, or its own worker after all) finished it first."""
        with self.failing:
            return self._fail(trial_id, study_id)

    def _fail(self, trial_id: int, study_id: int) -> bool:
        storage = self.storage
        try:
            who = storage.get_trial(trial_id).user_attrs
            where = f"{who.get('worker_host', '?')} pid {who.get('worker_pid', '?')}"
            storage.set_trial_user_attr(
                trial_id,
                "fail_reason",
                f"heartbeat lost: no beat for {self.grace:g}s, worker {where} presumed dead",
            )
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                return False
        except UpdateFinishedTrialError:
            return False
        study = self._study(study_id)
        enqueue_retry(study, storage.get_trial(trial_id), self.retries)
        return True

    def _study(self, study_id: int) -> optuna.Study:
        if study_id not in self._loaded:
            self._loaded[study_id] = optuna.load_study(
                study_name=self.studies[study_id], storage=self.storage
            )
        return self._loaded[study_id]


__all__ = ["Heartbeat"]
