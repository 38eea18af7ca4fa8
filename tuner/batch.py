"""``--batch-trials k``: a worker claims k trials with Optuna's ask, trains their k students at
once (``objectives.batched.run_trials``) and tells each result on its own.

The rules of a single trial (tuner.trials) hold for every trial of a batch: each claim is checked
against the budget (a surplus claim is given back at once), each trial is suggested, recorded,
heartbeaten and pruned on its own (a pruned trial leaves the batch, the others go on), and a
failed trial's configuration is retried. The k claims may come from several pair studies: all
students share the federation's architecture. TPE's ``constant_liar`` makes the k asks of one
study spread instead of proposing the same point k times.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from objectives import DkdError, EvalPoint, FederationBundle, KDRecipe, TrialResult
from objectives.batched import TrialSpec, run_trials

from .budget import claim_is_within_budget
from .options import Pair
from .space import SearchSpace
from .trials import (
    _RUNNING,
    HOST,
    LOST,
    Outcome,
    _fail,
    _give_back,
    beat_now,
    interrupts_held,
)

#: Trial user attrs copied from the result, as tuner.trials records them.
_RESULT_ATTRS = (
    "accuracy_before",
    "accuracy_after",
    "local_accuracy_before",
    "local_accuracy_after",
    "forgetting",
    "seconds",
    "steps",
)


def pick_slots(left: dict[str, int], k: int, order: list[str]) -> list[str]:
    """Up to ``k`` study names for one batch: each slot goes to the study with the most work
    left once the slots already given are counted (``order`` breaks ties), never past its
    ``left``; a study may get several slots."""
    remaining = dict(left)
    slots: list[str] = []
    rank = {name: i for i, name in enumerate(order)}
    while len(slots) < k:
        open_ = [n for n in order if remaining.get(n, 0) > 0]
        if not open_:
            break
        name = max(open_, key=lambda n: (remaining[n], -rank[n]))
        remaining[name] -= 1
        slots.append(name)
    return slots


@dataclass
class _Claim:
    name: str
    study: optuna.Study
    trial: optuna.Trial
    params: dict[str, Any]
    spec: TrialSpec


def run_pair_batch(
    slots: list[tuple[str, optuna.Study, Pair]],
    bundle: FederationBundle,
    space: SearchSpace,
    *,
    budget: int,
    device: str,
    seed: int,
    retries: int,
    recipe: KDRecipe,
    precision: str = "fp32",
) -> list[tuple[str, Outcome]]:
    """Claim one trial per slot (study name, study, pair), run the claimed ones together, and
    close each as COMPLETE, PRUNED or FAIL; one ``(study name, Outcome)`` per slot."""
    k = len(slots)
    outcomes: list[tuple[str, Outcome]] = []
    claims: list[_Claim] = []
    taken: list[tuple[optuna.Study, optuna.Trial]] = []
    try:
        for name, study, pair in slots:
            with interrupts_held():  # as in tuner.trials: ask commits RUNNING, then samples
                trial = study.ask()
                _RUNNING[trial._trial_id] = (study, trial, retries)
                taken.append((study, trial))
            if not claim_is_within_budget(study, trial._trial_id, budget):
                outcomes.append((name, _give_back(study, trial)))
                taken.pop()
                _RUNNING.pop(trial._trial_id, None)
                continue
            beat_now(study, trial._trial_id)
            claims.append(_prepare(name, study, trial, space, pair, seed, device, precision, k))
        specs = [c.spec for c in claims]
        results = run_trials(bundle, specs, device=device, recipe=recipe, precision=precision)
    except BaseException as exc:  # a bug or an interrupt: every claimed trial fails, retried later
        for study, trial in taken:
            with contextlib.suppress(Exception):  # abandon_running may have closed it already
                _fail(study, trial, f"{exc.__class__.__name__}: {exc}", retries)
            _RUNNING.pop(trial._trial_id, None)
        raise
    raised: BaseException | None = None
    try:
        for c, result in zip(claims, results, strict=True):
            try:
                outcome = _close(c, result, retries)
            except (UpdateFinishedTrialError, ValueError):
                # A heartbeat check of another worker failed it meanwhile (as in tuner.trials).
                frozen = c.study._storage.get_trial(c.trial._trial_id)
                reason = str(frozen.user_attrs.get("fail_reason", ""))
                if not reason.startswith(LOST):
                    raise
                outcome = Outcome(c.trial.number, "lost", {}, reason=reason)
            except BaseException as exc:
                raised = raised or exc
                continue
            outcomes.append((c.name, outcome))
    finally:
        for c in claims:
            _RUNNING.pop(c.trial._trial_id, None)
    if raised is not None:
        raise raised
    return outcomes


def _prepare(
    name: str,
    study: optuna.Study,
    trial: optuna.Trial,
    space: SearchSpace,
    pair: Pair,
    seed: int,
    device: str,
    precision: str,
    k: int,
) -> _Claim:
    """Suggest the trial's parameters and record DESIGN §4's user attrs, as tuner.trials does."""
    fixed = trial.user_attrs
    params = space.suggest(trial)
    a, b = pair
    student, teacher = (a, b) if params["position"] == "a" else (b, a)
    trial_seed = seed * 1_000_003 + trial.number  # same rule as tuner.trials
    for key, value in {
        "student": student,
        "teacher": teacher,
        "device": device,
        "worker_host": HOST,
        "worker_pid": os.getpid(),
        "seed": trial_seed,
        "attempt": int(fixed.get("attempt", 1)),
        "precision": precision,
        "batch_trials": k,
    }.items():
        trial.set_user_attr(key, value)
    is_default = "default" in fixed

    def on_eval(point: EvalPoint) -> None:
        trial.report(point.gain, point.index)
        # The default trials are the comparison: they always run to the end.
        if not point.final and not is_default and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {point.index}/{point.points}")

    spec = TrialSpec(
        student,
        (teacher,),
        temperature=params["temperature"],
        alpha=params["alpha"],
        divergence=params["divergence"],
        transfer_set=params["transfer_set"],
        aggregation=params.get("aggregation", "avg"),
        seed=trial_seed,
        on_eval=on_eval,
    )
    return _Claim(name, study, trial, params, spec)


def _close(c: _Claim, result: TrialResult | Exception, retries: int) -> Outcome:
    """Tell one trial's outcome; a bug's exception is recorded, then raised."""
    study, trial, params = c.study, c.trial, c.params
    if isinstance(result, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)
        return Outcome(trial.number, "pruned", params, reason=str(result))
    if isinstance(result, DkdError):  # NonFiniteLoss and the like: this configuration
        _fail(study, trial, str(result), retries)
        return Outcome(trial.number, "failed", params, reason=str(result))
    if isinstance(result, Exception):  # a bug in a callback: record it, then end the worker
        _fail(study, trial, f"{result.__class__.__name__}: {result}", retries)
        raise result
    if not math.isfinite(result.gain):
        _fail(study, trial, f"gain is {result.gain}", retries)
        return Outcome(trial.number, "failed", params, reason="non-finite gain")
    record = result.as_dict()
    for key in _RESULT_ATTRS:
        trial.set_user_attr(key, record[key])
    study.tell(trial, result.gain)
    return Outcome(trial.number, "complete", params, result.gain, result.seconds)
