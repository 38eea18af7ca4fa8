"""One Optuna trial of a pair study: claim, suggest, run the one-round KD, record, tell.

Kept apart from the pool so the rules of a single trial (budget claim, pruning, what is stored,
what a failure means) read in one place. The objective is ``TrialResult.gain``; every trial
records DESIGN §4's user attrs.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from objectives import DkdError, EvalPoint, FederationBundle, KDRecipe, run_trial

from .budget import claim_is_within_budget, enqueue_retry
from .options import Pair
from .space import SearchSpace

HOST = socket.gethostname()
#: Trials this process is running (trial id -> study, trial, retries), so an interrupt of the
#: main thread can close them while the in-process worker thread cannot be interrupted, and the
#: heartbeat thread knows what to beat for.
_RUNNING: dict[int, tuple[optuna.Study, optuna.Trial, int]] = {}
#: The start of the fail_reason a heartbeat check writes on a trial whose worker went silent.
LOST = "heartbeat lost"


@dataclass
class Outcome:
    """What happened to one claimed trial, for the worker's log and its failure counter."""

    number: int
    state: str  # complete | pruned | failed | surplus | lost (failed by another's heartbeat check)
    params: dict[str, Any]
    gain: float | None = None
    seconds: float = 0.0
    reason: str = ""


def run_pair_trial(
    study: optuna.Study,
    bundle: FederationBundle,
    space: SearchSpace,
    pair: Pair,
    *,
    budget: int,
    device: str,
    seed: int,
    retries: int,
    recipe: KDRecipe,
    precision: str = "fp32",
) -> Outcome:
    """Claim one trial of ``study`` and run it to COMPLETE, PRUNED or FAIL.

    ``recipe`` is the run's KD recipe, passed explicitly: the bundle is cached per federation
    hash, which the KD recipe is not part of, so ``bundle.config.kd`` may be another run's.
    ``precision``: ``fp32`` or ``bf16`` (autocast of the training steps, see run_trial).
    """
    with interrupts_held():
        trial = study.ask()
        # Registered at once: an interrupt even during the claim must not leave it RUNNING.
        _RUNNING[trial._trial_id] = (study, trial, retries)
    try:
        if not claim_is_within_budget(study, trial._trial_id, budget):
            return _give_back(study, trial)
        beat_now(study, trial._trial_id)
        return _run_claimed(
            study, trial, bundle, space, pair, device, seed, retries, recipe, precision
        )
    except BaseException as exc:
        try:
            frozen = study._storage.get_trial(trial._trial_id)
        except Exception:
            raise exc from None  # the database is gone too: the heartbeat will fail the trial
        reason = str(frozen.user_attrs.get("fail_reason", ""))
        if isinstance(exc, UpdateFinishedTrialError | ValueError) and reason.startswith(LOST):
            # A heartbeat check of another worker failed this trial while it ran (this process
            # was silent too long); its retry is queued already.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None
            return Outcome(trial.number, "lost", {}, reason=reason)
        if frozen.state == TrialState.RUNNING:
            # An interrupt (or a bug) outside run_trial's own guard, e.g. while the result is
            # stored: close the trial here, or it would hold budget until its heartbeat lapses.
            with contextlib.suppress(Exception):
                _fail(study, trial, f"{exc.__class__.__name__}: {exc}", retries)
        raise
    finally:
        _RUNNING.pop(trial._trial_id, None)


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


def beat_now(study: optuna.Study, trial_id: int) -> None:
    """The first heartbeat of a trial, right after its claim, so that no live trial goes without
    a beat row for a whole interval. Best effort: the heartbeat thread beats again soon."""
    with contextlib.suppress(Exception):
        study._storage.record_heartbeat(trial_id)


def _run_claimed(
    study: optuna.Study,
    trial: optuna.Trial,
    bundle: FederationBundle,
    space: SearchSpace,
    pair: Pair,
    device: str,
    seed: int,
    retries: int,
    recipe: KDRecipe,
    precision: str = "fp32",
) -> Outcome:
    fixed = trial.user_attrs
    params = space.suggest(trial)
    a, b = pair
    student, teacher = (a, b) if params["position"] == "a" else (b, a)
    trial_seed = seed * 1_000_003 + trial.number  # distinct per trial, reproducible per study
    for key, value in {
        "student": student,
        "teacher": teacher,
        "device": device,
        "worker_host": HOST,
        "worker_pid": os.getpid(),
        "seed": trial_seed,
        "attempt": int(fixed.get("attempt", 1)),
        "precision": precision,
    }.items():
        trial.set_user_attr(key, value)
    is_default = "default" in fixed

    def on_eval(point: EvalPoint) -> None:
        trial.report(point.gain, point.index)
        # The default trials are the comparison: they always run to the end.
        if not point.final and not is_default and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {point.index}/{point.points}")

    try:
        result = run_trial(
            bundle,
            student,
            [teacher],
            temperature=params["temperature"],
            alpha=params["alpha"],
            divergence=params["divergence"],
            transfer_set=params["transfer_set"],
            aggregation=params.get("aggregation", "avg"),
            seed=trial_seed,
            device=device,
            on_eval=on_eval,
            recipe=recipe,
            precision=precision,
        )
    except optuna.TrialPruned as exc:
        study.tell(trial, state=TrialState.PRUNED)
        return Outcome(trial.number, "pruned", params, reason=str(exc))
    except DkdError as exc:  # NonFiniteLoss and the like: this configuration, not the service
        _fail(study, trial, str(exc), retries)
        return Outcome(trial.number, "failed", params, reason=str(exc))
    except BaseException as exc:  # a bug or an interrupt: record it, then let it end the worker
        _fail(study, trial, f"{exc.__class__.__name__}: {exc}", retries)
        raise
    if not math.isfinite(result.gain):
        _fail(study, trial, f"gain is {result.gain}", retries)
        return Outcome(trial.number, "failed", params, reason="non-finite gain")
    record = result.as_dict()
    for key in (
        "accuracy_before",
        "accuracy_after",
        "local_accuracy_before",
        "local_accuracy_after",
        "forgetting",
        "seconds",
        "steps",
    ):
        trial.set_user_attr(key, record[key])
    study.tell(trial, result.gain)
    return Outcome(trial.number, "complete", params, result.gain, result.seconds)


def abandon_running(reason: str) -> None:
    """Mark this process's running trials FAIL (their configuration is retried on the next run)
    instead of leaving them RUNNING, where they would hold budget forever."""
    for study, trial, retries in list(_RUNNING.values()):
        # The worker thread may have finished the trial meanwhile; then there is nothing to do.
        with contextlib.suppress(Exception):
            _fail(study, trial, reason, retries)


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str, retries: int) -> None:
    trial.set_user_attr("fail_reason", reason[:500])
    study.tell(trial, state=TrialState.FAIL)
    enqueue_retry(study, study._storage.get_trial(trial._trial_id), retries)


def _give_back(study: optuna.Study, trial: optuna.Trial) -> Outcome:
    """Close a surplus claim. A popped waiting trial (a default or a retry) goes back in the
    queue with its parameters, so it is not lost to a race."""
    frozen = study._storage.get_trial(trial._trial_id)
    trial.set_user_attr("surplus", True)
    study.tell(trial, state=TrialState.FAIL)
    fixed = frozen.system_attrs.get("fixed_params")
    if fixed:
        attrs = {k: v for k, v in frozen.user_attrs.items() if k != "surplus"}
        study.enqueue_trial(fixed, user_attrs=attrs)
    return Outcome(trial.number, "surplus", {})
