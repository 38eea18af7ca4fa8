"""Pair studies: one per unordered pair ``<federation>/<a>-<b>``, searched over T, α, divergence,
transfer set, position (and aggregation for several teachers); a trial is one KD round of the
student the position names, learning from the other (objectives.run_trial). The default trials
(T = 1, α = 0.5, kl, public, one per position) are enqueued once, when the study is created.

How a study spends its budget (``--strategy``) is its strategy's (tuner.strategies): each
claimed trial's seed and pruning, and before each claim what to enqueue or that the study is
done; the kind records what the strategy decides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import optuna
from optuna.trial import FrozenTrial

from objectives import FederationBundle, StudyConfig, TrialResult, run_trial
from objectives.batched import TrialSpec
from objectives.trial import PRECISIONS
from tuner.formats import config_line
from tuner.options import TuneOptions, parse_pairs
from tuner.search.space import parse_space
from tuner.search.warm import WARM_TRIALS, enqueue_warm, siblings, warm_at
from tuner.store.db import STOPPED_ATTR
from tuner.strategies import strategy, strategy_of

from .base import (
    Job,
    OnEval,
    Queued,
    StudyKind,
    Task,
    TunedKind,
    config_record,
    missing_defaults,
    mode_of,
    stored_config,
)
from .growth import pair_identity

#: Result fields a completed pair trial records as user attrs.
RESULT_ATTRS = (
    "accuracy_before",
    "accuracy_after",
    "local_accuracy_before",
    "local_accuracy_after",
    "forgetting",
    "seconds",
    "steps",
)


def finish(result: TrialResult, fields: Sequence[str] = RESULT_ATTRS) -> tuple[float, dict]:
    """The gain as the objective, and the result's fields as attrs."""
    record = result.as_dict()
    return result.gain, {k: record[k] for k in fields}


def study_name(federation: str, pair: tuple[int, int]) -> str:
    """A pair study's name, ``<federation>/<a>-<b>``."""
    return f"{federation}/{pair[0]}-{pair[1]}"


def kd_job(
    params: dict[str, Any],
    task: Task,
    bundle: FederationBundle,
    *,
    seed: int,
    device: str,
    precision: str,
    prunable: bool = True,
) -> Job:
    """The job of one KD round of a pair (a pair trial, or a confirmation run of one): the
    student the position names learns from the other member, alone (``call``) or with other
    trials in one batch (``spec``, objectives.batched)."""
    a, b = task.target
    student, teacher = (a, b) if params["position"] == "a" else (b, a)
    spec = TrialSpec(
        student=student,
        teachers=(teacher,),
        temperature=params["temperature"],
        alpha=params["alpha"],
        divergence=params["divergence"],
        transfer_set=params["transfer_set"],
        aggregation=params.get("aggregation", "avg"),
        seed=seed,
    )
    recipe = task.config.kd

    def call(on_eval: OnEval | None) -> TrialResult:
        return run_trial(
            bundle, student, [teacher], temperature=spec.temperature, alpha=spec.alpha,
            divergence=spec.divergence, transfer_set=spec.transfer_set,
            aggregation=spec.aggregation, seed=spec.seed, device=device, on_eval=on_eval,
            recipe=recipe, precision=precision,
        )  # fmt: skip

    attrs = {"student": student, "teacher": teacher, "seed": seed, "precision": precision}
    return Job(params, attrs, call, finish, prunable=prunable, spec=spec)


class PairKind(TunedKind):
    name = "pair"
    batchable = True
    precisions = PRECISIONS
    prunable = True
    races = True
    confirmed_by = "confirm"
    per_pair = True

    def run_space(self, config: StudyConfig, space: Any) -> Any:
        return space

    def run_targets(self, config: StudyConfig, opts: TuneOptions) -> list[tuple[int, ...]]:
        return list(parse_pairs(opts.pairs, config.federation.participants))

    def run_what(self, config: StudyConfig) -> str:
        return "pair(s)"

    def study_name(self, federation: str, target: tuple[int, ...]) -> str:
        return study_name(federation, (target[0], target[1]))

    def task_from(self, name: str, attrs: dict[str, Any], budget: int | None) -> Task:
        space = parse_space(attrs["search"], f"study {name}")
        return Task(
            name, self.name, tuple(attrs["pair"]), stored_config(name, attrs), space, budget,
            strategy=strategy_of(attrs).name,
        )  # fmt: skip

    def expected(self, task: Task) -> dict[str, Any]:
        search = task.space.to_dict()
        # The ranges may change between runs; optuna cannot mix choice sets.
        return {
            "federation_hash": task.config.federation_hash,
            "kd_recipe": config_record(task.config)["kd"],
            "strategy": strategy(task.strategy).name,
            **{f"search.{k}": search[k] for k in ("divergence", "transfer_set", "position",
                                                   "aggregation")},
        }  # fmt: skip

    phrases: ClassVar[dict[str, str]] = {
        **StudyKind.phrases,
        "strategy": "was run with --strategy {have}, this run asks for --strategy {want} (rerun "
        "with --strategy {have} to go on with it)",
    }

    def conflict(self, name: str, attrs: dict[str, Any], task: Task, url: str) -> str | None:
        # A study without the attr is read by the one rule (tuner.strategies.strategy_of).
        return super().conflict(name, {**attrs, "strategy": strategy_of(attrs).name}, task, url)

    def record(self, task: Task, bundle: FederationBundle) -> dict[str, Any]:
        a, b = task.target
        return {
            "mode": self.name,
            "strategy": strategy(task.strategy).name,
            "pair": [a, b],
            "federation": task.config.name,
            "federation_hash": bundle.hash,
            **pair_identity(task.config, task.target),  # what a grown federation keeps it by
            "accuracy_a": round(float(bundle.accuracy[a]), 4),
            "accuracy_b": round(float(bundle.accuracy[b]), 4),
            "local_accuracy_a": round(float(bundle.local_accuracy[a]), 4),
            "local_accuracy_b": round(float(bundle.local_accuracy[b]), 4),
            "kd_recipe": config_record(task.config)["kd"],
            "search": task.space.to_dict(),
            "config": config_record(task.config),
        }

    def queue(self, task: Task, trials: Sequence[FrozenTrial]) -> list[Queued]:
        return missing_defaults(task, trials, "position")

    def prepare(
        self,
        trial: optuna.Trial,
        task: Task,
        bundle: FederationBundle,
        *,
        seed: int,
        device: str,
        precision: str,
    ) -> Job:
        params = task.space.suggest(trial)
        run = strategy(task.strategy).round(trial.user_attrs, trial.number, seed)
        job = kd_job(params, task, bundle, seed=run.seed, device=device, precision=precision,
                     prunable=run.prunable)  # fmt: skip
        job.attrs.update(run.attrs)
        return job

    def before_claim(self, study: optuna.Study, task: Task) -> str | None:
        plan = strategy(task.strategy)
        if not plan.decides_before_claim:  # nothing to read: the budget alone ends the study
            return None
        claim = plan.before_claim(study.get_trials(deepcopy=False), task.budget)
        if claim.stopped is not None:
            if study.user_attrs.get(STOPPED_ATTR) != claim.stopped:
                study.set_user_attr(STOPPED_ATTR, claim.stopped)
            return claim.reason
        for params, attrs in claim.enqueue:
            study.enqueue_trial(params, user_attrs=attrs)
        return None

    def share(self, study: optuna.Study, task: Task, number: int) -> int:
        plan = strategy(task.strategy)
        if number != plan.share_at:  # one claim, once: trial numbers are unique per study
            return 0
        # Only pairs whose race is over: a racing pair's incumbent may yet change.
        own, others = siblings(
            study, lambda attrs: mode_of(attrs) == self.name and bool(attrs.get(STOPPED_ATTR))
        )
        todo = plan.shared(own, study.get_trials(deepcopy=False), task.space, others)
        for params, attrs in todo:
            study.enqueue_trial(params, user_attrs=attrs)
        return len(todo)

    def warm_start(self, study: optuna.Study, task: Task, number: int) -> int:
        if number != warm_at(task.space):
            return 0
        # Never more than the budget can run: a warm trial left WAITING would wait forever.
        room = WARM_TRIALS if task.budget is None else task.budget - number - 1
        return enqueue_warm(
            study, task.space, lambda attrs: mode_of(attrs) == self.name, min(room, WARM_TRIALS)
        )

    def describe(self, params: dict[str, Any]) -> str:
        return f"{config_line(params, 'alpha')} student={params.get('position')}"
