"""A pair's answer, typed (docs/design.md §4 "One answer per pair", §9): computed here, and only
here, from its confirmation plan (tuner.store.records.ConfirmationPlan) and the runs of its
confirmation study; never stored. :class:`Answer` is what the recommendation, its difference,
interval and seeds are read from; :func:`answer_fields` flattens it into a pair row's columns
(the export's form)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tuner.read.decision import LEVEL, difference_ci, look_levels, verdict
from tuner.store.adapter import FrozenStudy
from tuner.store.records import ConfirmationPlan, is_default


@dataclass(frozen=True, slots=True)
class SeedRuns:
    """One candidate's confirmation runs over the seeds, in the seeds' order."""

    gain: tuple[float, ...]
    accuracy_after: tuple[float, ...]
    forgetting: tuple[float, ...]

    @property
    def gain_mean(self) -> float:
        return statistics.fmean(self.gain)

    @property
    def gain_std(self) -> float | None:
        return _std(self.gain)


@dataclass(frozen=True, slots=True)
class Confirmed:
    """One candidate confirmed over fresh seeds: the pair trial it re-runs, who learns from
    whom, its gain per seed with mean ± std, its mean accuracy after and forgetting."""

    trial: int
    params: dict[str, Any]
    student: int
    teacher: int
    is_default: bool
    gain: tuple[float, ...]
    gain_mean: float
    gain_std: float | None
    accuracy_mean: float
    forgetting_mean: float
    forgetting_std: float | None
    single_trial_gain: float  # the pair trial's own (single-seed) value


@dataclass(frozen=True, slots=True)
class Answer:
    """A pair's answer at the look that decided it: the recommended candidate, the one tested
    (``best``: the best confirmed mean) against its same-student ``default``, the difference of
    their means with its interval at the look's ``level``, the p-value and the verdict
    (``beyond_noise``: the tested candidate is recommended)."""

    seeds: tuple[int, ...]
    recommended: Confirmed
    best: Confirmed
    default: Confirmed
    candidates: tuple[Confirmed, ...]
    difference: float | None  # None: no tuned candidate was tested
    difference_ci: tuple[float, float] | None
    p_value: float | None
    beyond_noise: bool | None  # None only inside the computation: not decided at this look
    min_gain: float
    level: float
    criterion: str
    max_forgetting: float | None
    looks: tuple[int, ...] = ()

    @property
    def tuned(self) -> bool:
        """True when a tuned candidate was tested against the default."""
        return self.best.trial != self.default.trial

    @property
    def recommends_default(self) -> bool:
        return self.recommended.trial == self.default.trial


@dataclass(frozen=True, slots=True)
class ConfirmationState:
    """Where a pair's confirmation stands: the fresh seeds it needs run so far (those of its
    first look, then all of them while the first look does not decide) and its answer (None
    while those runs are incomplete, or without a plan)."""

    seeds: tuple[int, ...] = ()
    answer: Answer | None = None


def confirmation_runs(
    trials: Sequence[FrozenTrial], candidate: int, seeds: Sequence[int]
) -> SeedRuns | None:
    """One candidate's runs over ``seeds``, from a confirmation study's trials; None while a
    seed is missing."""
    done = {
        t.params["seed"]: t
        for t in trials
        if t.state == TrialState.COMPLETE and t.params.get("candidate") == candidate
    }
    if any(s not in done for s in seeds):
        return None
    return SeedRuns(
        gain=tuple(float(done[s].value) for s in seeds),
        accuracy_after=tuple(float(done[s].user_attrs["accuracy_after"]) for s in seeds),
        forgetting=tuple(float(done[s].user_attrs["forgetting"]) for s in seeds),
    )


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def recommendation(
    study: FrozenStudy,
    trials: Sequence[FrozenTrial],
    confirmations: Sequence[FrozenTrial],
    max_forgetting: float | None = None,
    level: float = LEVEL,
    *,
    min_gain: float,
) -> Answer | None:
    """The configuration to use for a pair, from its confirmed candidates (docs/design.md §4):
    the candidate with the best mean gain over the fresh seeds (the defaults among them; tuned
    ones only if they forget at most ``max_forgetting`` pp, where given) is recommended only if
    it passes :func:`~tuner.read.decision.decide` against its same-student default (at least
    ``min_gain`` pp more, p below its look's level); otherwise that default is. A sequential
    plan decides at its first look when that is clear. None while the runs a look needs are
    incomplete."""
    return confirmation_state(study, trials, confirmations, max_forgetting, level,
                              min_gain=min_gain).answer  # fmt: skip


def confirmation_state(
    study: FrozenStudy,
    trials: Sequence[FrozenTrial],
    confirmations: Sequence[FrozenTrial],
    max_forgetting: float | None = None,
    level: float = LEVEL,
    *,
    min_gain: float,
) -> ConfirmationState:
    """Where a pair's confirmation stands (:class:`ConfirmationState`; empty without a plan)."""
    plan = ConfirmationPlan.from_attrs(study.user_attrs)
    if plan is None:
        return ConfirmationState()
    levels = look_levels(len(plan.looks), level)
    for i, n in enumerate(plan.looks):
        seeds = plan.seeds[:n]
        last = i == len(plan.looks) - 1
        answer = _at_look(study, trials, confirmations, plan.candidates, seeds, max_forgetting,
                          levels[i], min_gain, last)  # fmt: skip
        if answer is None:
            return ConfirmationState(seeds)
        if answer.beyond_noise is not None:
            return ConfirmationState(seeds, replace(answer, looks=plan.looks))
    raise AssertionError("the last look always decides")


def _at_look(
    study: FrozenStudy,
    trials: Sequence[FrozenTrial],
    confirmations: Sequence[FrozenTrial],
    candidates: Sequence[int],
    seeds: Sequence[int],
    max_forgetting: float | None,
    level: float,
    min_gain: float,
    last: bool,
) -> Answer | None:
    """The answer over ``seeds`` (``beyond_noise`` None: not decided at this look), None while
    a run is missing."""
    by_number = {t.number: t for t in trials}
    confirmed = {}
    for number in candidates:
        runs = confirmation_runs(confirmations, number, seeds)
        if runs is None or number not in by_number:
            return None
        confirmed[number] = runs
    a, b = study.user_attrs["pair"]

    def entry(number: int) -> Confirmed:
        t, runs = by_number[number], confirmed[number]
        position = t.params["position"]
        return Confirmed(
            trial=number,
            params=dict(t.params),
            student=a if position == "a" else b,
            teacher=b if position == "a" else a,
            is_default=is_default(t.user_attrs),
            gain=runs.gain,
            gain_mean=runs.gain_mean,
            gain_std=runs.gain_std,
            accuracy_mean=statistics.fmean(runs.accuracy_after),
            forgetting_mean=statistics.fmean(runs.forgetting),
            forgetting_std=_std(runs.forgetting),
            single_trial_gain=t.value,
        )

    entries = [entry(n) for n in candidates]
    defaults = {e.params["position"]: e for e in entries if e.is_default}
    if not defaults:
        return None
    # Every candidate with a default to compare with; the defaults compete as they are, the
    # tuned ones only within the forgetting bound.
    admitted = [
        e for e in entries
        if e.params["position"] in defaults
        and (e.is_default or max_forgetting is None or e.forgetting_mean <= max_forgetting)
    ]  # fmt: skip
    best = max(admitted, key=lambda e: (e.gain_mean, -e.trial))
    default = defaults[best.params["position"]]
    tuned = not best.is_default
    # No tuned candidate ahead of its default: the default, at any look.
    beyond, p_value = (
        verdict(best.gain, default.gain, min_gain, level, last) if tuned else (False, None)
    )
    gain_rule = f", at least {min_gain:g} pp" if min_gain else ""
    return Answer(
        seeds=tuple(seeds),
        recommended=best if beyond else default,
        best=best,
        default=default,
        candidates=tuple(entries),
        difference=best.gain_mean - default.gain_mean if tuned else None,
        difference_ci=difference_ci(best.gain, default.gain, level) if tuned else None,
        p_value=p_value,
        beyond_noise=beyond,
        min_gain=min_gain,
        level=level,
        criterion=f"one-sided paired t-test over {len(seeds)} fresh seeds, p < {level:g}"
        + gain_rule,
        max_forgetting=max_forgetting,
    )


#: A pair row's answer columns (:func:`answer_fields`), in the export's order.
ANSWER_KEYS = ("recommended_params", "recommended_trial", "recommended_student",
               "recommended_teacher", "recommended_is_default", "recommended_gain_mean",
               "recommended_gain_std", "recommended_forgetting_mean",
               "recommended_forgetting_std", "confirmed_default_gain_mean",
               "confirmed_default_gain_std", "confirmed_default_forgetting_mean",
               "confirmed_difference", "confirmed_difference_ci", "p_value", "level",
               "beyond_noise", "min_gain", "seeds")  # fmt: skip


def answer_fields(answer: Answer | None) -> dict[str, Any]:
    """A pair row's answer columns (None where no confirmation is complete)."""
    if answer is None:
        return dict.fromkeys(ANSWER_KEYS)
    r, d = answer.recommended, answer.default
    return {
        "recommended_params": r.params,
        "recommended_trial": r.trial,
        "recommended_student": r.student,
        "recommended_teacher": r.teacher,
        "recommended_is_default": answer.recommends_default,
        "recommended_gain_mean": r.gain_mean,
        "recommended_gain_std": r.gain_std,
        "recommended_forgetting_mean": r.forgetting_mean,
        "recommended_forgetting_std": r.forgetting_std,
        "confirmed_default_gain_mean": d.gain_mean,
        "confirmed_default_gain_std": d.gain_std,
        "confirmed_default_forgetting_mean": d.forgetting_mean,
        "confirmed_difference": answer.difference,
        "confirmed_difference_ci": answer.difference_ci,
        "p_value": answer.p_value,
        "level": answer.level,  # the deciding look's test level (tuner.read.decision)
        "min_gain": answer.min_gain,
        "beyond_noise": answer.beyond_noise,
        "seeds": len(answer.seeds),
    }


__all__ = [
    "ANSWER_KEYS",
    "Answer",
    "ConfirmationState",
    "Confirmed",
    "SeedRuns",
    "answer_fields",
    "confirmation_runs",
    "confirmation_state",
    "recommendation",
]
