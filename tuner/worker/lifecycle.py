"""The life of one trial, for every study kind, one at a time or K at once (docs/design.md §6):

the kind's look at the study (a race enqueues its next rounds, or says it is over) → claim
(``ask``, interrupts held back) → register (this process runs it: heartbeats, Ctrl-C)
→ check the budget (a surplus claim is given back) → first beat → the kind prepares the job
(suggest, record attrs) → run (report at evaluation points, prune) → tell COMPLETE / PRUNED, or
FAIL with ``fail_reason`` and the configuration enqueued again → unregister.

A trial that another worker's heartbeat check failed while it ran ("lost") is neither told nor
retried here: that worker enqueued its retry already. An interrupt or a bug anywhere after the
claim leaves the trial FAIL, never RUNNING.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from objectives import DkdError, EvalPoint, FederationBundle
from objectives.batched import run_trials
from tuner.kinds import KINDS, Job, Task
from tuner.store.adapter import fixed_params, storage_of, trial_id_of
from tuner.store.records import is_default
from tuner.worker import interrupts
from tuner.worker.budget import claim_is_within_budget, enqueue_retry

HOST = socket.gethostname()
#: The start of the fail_reason a heartbeat check writes on a trial whose worker went silent.
LOST = "heartbeat lost"
#: Trials this process is running (trial id -> study, trial, retries), so an interrupt of the
#: main thread can close them while the in-process worker thread cannot be interrupted, and the
#: heartbeat thread knows what to beat for.
_RUNNING: dict[int, tuple[optuna.Study, optuna.Trial, int]] = {}


@dataclass
class Outcome:
    """What happened to one claimed trial, for the worker's log and its failure counter."""

    number: int
    state: str  # complete | pruned | failed | surplus | lost | empty (a fixed kind's queue)
    #             | stopped (the study needs no more: a settled race)
    params: dict[str, Any]
    value: float | None = None
    seconds: float = 0.0
    reason: str = ""


@dataclass
class Settings:
    """What every trial of a worker shares: device, seed base, retries, precision, the
    forgetting bound its trials' constraint is measured against (``--max-forgetting``) and
    whether searched studies warm-start from the others (``--warm-start``)."""

    device: str
    seed: int
    retries: int
    precision: str = "fp32"
    max_forgetting: float | None = None
    warm_start: bool = False


# --- interrupts and registration ----------------------------------------------------------------


class _Held:
    """Interrupts held back by :func:`interrupts_held` (in the main thread of a worker process,
    where its signal handler asks :func:`defer_interrupt`)."""

    depth = 0
    pending = False


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM back until the block ends, then raise it. ``ask`` commits the trial
    as RUNNING and then still runs the sampler: an interrupt in between would leave a RUNNING
    trial nobody knows of (until a heartbeat check, a grace period later)."""
    main = threading.current_thread() is threading.main_thread()
    _Held.depth += main
    try:
        yield
    finally:
        _Held.depth -= main
    if main and not _Held.depth and _Held.pending:
        _Held.pending = False
        raise KeyboardInterrupt


def defer_interrupt() -> bool:
    """For a signal handler: True if an interrupt arrived inside :func:`interrupts_held` (it is
    raised when the block ends), False if the handler should raise it now."""
    if _Held.depth:
        _Held.pending = True
        return True
    return False


def running_ids() -> list[int]:
    """The trials this process is running now (the heartbeat thread beats for them)."""
    return list(_RUNNING)


def abandon_running(reason: str) -> None:
    """Mark this process's running trials FAIL (their configuration is retried on the next run)
    instead of leaving them RUNNING, where they would hold budget forever."""
    for study, trial, retries in list(_RUNNING.values()):
        # The worker thread may have finished the trial meanwhile; then there is nothing to do.
        with contextlib.suppress(Exception):
            _fail(study, trial, reason, retries)


# --- the steps ----------------------------------------------------------------------------------


def _claim(study: optuna.Study, task: Task, s: Settings) -> optuna.Trial | Outcome:
    """Ask for a trial and keep it only if the study has room (else an Outcome saying why);
    with ``--warm-start``, the kind may enqueue what other studies found good
    (tuner.search.warm)."""
    retries = s.retries
    interrupts.raise_swallowed()  # before a claim: nothing to clean up yet
    done = KINDS[task.kind].before_claim(study, task)  # a race enqueues its next rounds here
    if done is not None:
        return Outcome(-1, "stopped", {}, reason=done)
    with interrupts_held():
        trial = study.ask()
        # Registered at once: an interrupt even during the claim must not leave it RUNNING.
        _RUNNING[trial_id_of(trial)] = (study, trial, retries)
    try:
        if KINDS[task.kind].fixed and not _queued(study, trial):
            # A fixed kind's work is its queue: a claim that found it empty runs nothing.
            _close_surplus(study, trial)
            outcome = Outcome(trial.number, "empty", {})
        elif task.budget is not None and not claim_is_within_budget(
            study, trial_id_of(trial), task.budget
        ):
            outcome = _give_back(study, trial)
        else:
            with contextlib.suppress(Exception):  # best effort: the heartbeat thread beats soon
                storage_of(study).record_heartbeat(trial_id_of(trial))
            with interrupts_held():  # the enqueue happens whole or, if interrupted, not at all
                KINDS[task.kind].share(study, task, trial.number)  # --strategy federation
                if s.warm_start:
                    KINDS[task.kind].warm_start(study, task, trial.number)
            return trial
    except BaseException as exc:
        _abandon(study, trial, exc, retries)
        _RUNNING.pop(trial_id_of(trial), None)
        raise
    _RUNNING.pop(trial_id_of(trial), None)
    return outcome


def _queued(study: optuna.Study, trial: optuna.Trial) -> bool:
    """True when ``ask`` popped an enqueued trial (it holds fixed parameters)."""
    return bool(fixed_params(storage_of(study).get_trial(trial_id_of(trial))))


def _prepare(
    study: optuna.Study,
    trial: optuna.Trial,
    task: Task,
    bundle: FederationBundle,
    s: Settings,
    batch: int = 1,
) -> Job:
    """The kind's job for a claimed trial, with the attrs every trial records (``batch``: the
    trials claimed together, recorded where more than one)."""
    job = KINDS[task.kind].prepare(
        trial, task, bundle, seed=s.seed, device=s.device, precision=s.precision
    )
    attrs = {
        **job.attrs,
        "device": s.device,
        "worker_host": HOST,
        "worker_pid": os.getpid(),
        "attempt": int(trial.user_attrs.get("attempt", 1)),
        **({"batch_trials": batch} if batch > 1 else {}),
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if job.prunable and is_default(trial.user_attrs):
        job.prunable = False  # the default trials are the comparison: they always run to the end
    return job


def pruning(trial: optuna.Trial, job: Job):
    """The callback a job reports its evaluation points to (reports, and prunes if it may)."""

    def on_eval(point: EvalPoint) -> None:
        interrupts.raise_swallowed()  # an interrupt a callback swallowed ends the trial here
        trial.report(point.gain, point.index)
        if job.prunable and not point.final and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {point.index}/{point.points}")

    return on_eval


def _close(
    study: optuna.Study,
    trial: optuna.Trial,
    job: Job,
    result: Any,
    retries: int,
    max_forgetting: float | None = None,
) -> Outcome:
    """Tell one trial's result: COMPLETE with its value and attrs, PRUNED, or FAIL (retried). A
    bug's exception is recorded, then raised."""
    params = job.params
    if isinstance(result, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
        return Outcome(trial.number, "pruned", params, reason=str(result))
    if isinstance(result, DkdError):  # NonFiniteLoss and the like: this configuration
        _fail(study, trial, str(result), retries)
        return Outcome(trial.number, "failed", params, reason=str(result))
    if isinstance(result, BaseException):  # a bug or an interrupt: record it, then end the worker
        _fail(study, trial, interrupts.reason(result), retries)
        raise result
    value, attrs = job.finish(result)
    if not math.isfinite(value):
        _fail(study, trial, f"value is {value}", retries)
        return Outcome(trial.number, "failed", params, reason="non-finite value")
    for key, v in attrs.items():
        trial.set_user_attr(key, v)
    if max_forgetting is not None and "forgetting" in attrs:
        # Optuna's constraint (feasible at <= 0): TPE samples away from trials that forgot more.
        trial.set_constraint("forgetting", float(attrs["forgetting"]) - max_forgetting)
    study.tell(trial, value)
    return Outcome(trial.number, "complete", params, value, float(attrs.get("seconds", 0.0)))


def _lost(study: optuna.Study, trial: optuna.Trial, exc: BaseException) -> Outcome | None:
    """The outcome of a trial another worker's heartbeat check failed while it ran, else None."""
    if not isinstance(exc, UpdateFinishedTrialError | ValueError):
        return None
    with contextlib.suppress(Exception):
        stored = storage_of(study).get_trial(trial_id_of(trial))
        reason = str(stored.user_attrs.get("fail_reason", ""))
        if reason.startswith(LOST):
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None
            return Outcome(trial.number, "lost", {}, reason=reason)
    return None


def _abandon(study: optuna.Study, trial: optuna.Trial, exc: BaseException, retries: int) -> None:
    """After an interrupt or a bug outside the job's own guard (e.g. while the result is stored):
    close the trial, or it would hold budget until its heartbeat lapses."""
    with contextlib.suppress(Exception):
        if storage_of(study).get_trial(trial_id_of(trial)).state == TrialState.RUNNING:
            _fail(study, trial, interrupts.reason(exc), retries)


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str, retries: int) -> None:
    trial.set_user_attr("fail_reason", reason[:500])
    study.tell(trial, state=TrialState.FAIL)
    enqueue_retry(study, storage_of(study).get_trial(trial_id_of(trial)), retries)


def _close_surplus(study: optuna.Study, trial: optuna.Trial) -> None:
    trial.set_user_attr("surplus", True)
    study.tell(trial, state=TrialState.FAIL)


def _give_back(study: optuna.Study, trial: optuna.Trial) -> Outcome:
    """Close a surplus claim. A popped waiting trial (a default or a retry) goes back in the
    queue with its parameters, so it is not lost to a race."""
    frozen = storage_of(study).get_trial(trial_id_of(trial))
    _close_surplus(study, trial)
    fixed = fixed_params(frozen)
    if fixed:
        attrs = {k: v for k, v in frozen.user_attrs.items() if k != "surplus"}
        study.enqueue_trial(fixed, user_attrs=attrs)
    return Outcome(trial.number, "surplus", {})


# --- one trial, or K at once --------------------------------------------------------------------


def run_one(study: optuna.Study, task: Task, bundle: FederationBundle, s: Settings) -> Outcome:
    """Claim one trial of ``study`` and run it to COMPLETE, PRUNED or FAIL."""
    claimed = _claim(study, task, s)
    if isinstance(claimed, Outcome):
        return claimed
    trial = claimed
    try:
        job = _prepare(study, trial, task, bundle, s)
        try:
            result: Any = job.call(pruning(trial, job))
        except (optuna.TrialPruned, DkdError) as exc:
            result = exc
        except BaseException as exc:  # a bug or an interrupt: record it, then end the worker
            _fail(study, trial, interrupts.reason(exc), s.retries)
            raise
        return _close(study, trial, job, result, s.retries, s.max_forgetting)
    except BaseException as exc:
        lost = _lost(study, trial, exc)
        if lost is not None:
            return lost
        _abandon(study, trial, exc, s.retries)
        raise
    finally:
        _RUNNING.pop(trial_id_of(trial), None)


def run_batch(
    slots: Sequence[tuple[optuna.Study, Task]], bundle: FederationBundle, s: Settings
) -> list[tuple[str, Outcome]]:
    """Claim one trial per slot (its study and task: a batchable kind), train the claimed ones
    together (objectives.batched) and close each on its own; one (study name, Outcome) each."""
    outcomes: list[tuple[str, Outcome]] = []
    claims: list[tuple[optuna.Study, Task, optuna.Trial, Job]] = []
    taken: list[tuple[optuna.Study, optuna.Trial]] = []
    try:
        for study, task in slots:
            claimed = _claim(study, task, s)
            if isinstance(claimed, Outcome):
                outcomes.append((task.study, claimed))
                continue
            taken.append((study, claimed))
            job = _prepare(study, claimed, task, bundle, s, batch=len(slots))
            assert job.spec is not None, f"kind {task.kind} cannot be batched"
            job.spec = dataclasses.replace(job.spec, on_eval=pruning(claimed, job))
            claims.append((study, task, claimed, job))
        specs = [job.spec for *_, job in claims]
        recipe = slots[0][1].config.kd  # one run, one KD recipe
        results = run_trials(bundle, specs, device=s.device, recipe=recipe, precision=s.precision)
    except BaseException as exc:  # a bug or an interrupt: every claimed trial fails, retried later
        for study, trial in taken:
            _abandon(study, trial, exc, s.retries)
            _RUNNING.pop(trial_id_of(trial), None)
        raise
    raised: BaseException | None = None
    try:
        for (study, task, trial, job), result in zip(claims, results, strict=True):
            try:
                outcome = _close(study, trial, job, result, s.retries, s.max_forgetting)
            except BaseException as exc:
                lost = _lost(study, trial, exc)
                if lost is None:
                    raised = raised or exc
                    continue
                outcome = lost
            outcomes.append((task.study, outcome))
    finally:
        for _, _, trial, _ in claims:
            _RUNNING.pop(trial_id_of(trial), None)
    if raised is not None:
        raise raised
    return outcomes


__all__ = [
    "HOST",
    "LOST",
    "Outcome",
    "Settings",
    "abandon_running",
    "defer_interrupt",
    "interrupts_held",
    "run_batch",
    "run_one",
    "running_ids",
]
