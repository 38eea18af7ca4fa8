"""Confirmation studies (``dkd-tune confirm``): one per pair study,
``<federation>/<a>-<b>/confirm``, holding the re-runs of that pair's candidates (its best trial
and the same-student default) with fresh seeds. A trial's parameters are the candidate's whole
configuration, the number of the pair trial it confirms (``candidate``) and its ``seed``, so a
retry needs nothing else. Every trial is enqueued by the run (a fixed kind); the value is the
gain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from objectives import AGGREGATIONS, DIVERGENCES, TRANSFER_SETS, FederationBundle
from objectives.trial import PRECISIONS
from tuner.search.space import T_LIMITS

from .base import Job, Queued, StudyKind, Task, config_record, missing, stored_config
from .growth import pair_identity
from .pair import kd_job

MAX_TRIAL = 10**9
MAX_SEED = 2**62


def runs(candidate: int, params: dict[str, Any], seeds: Sequence[int]) -> list[Queued]:
    """The confirmation trials of one candidate: its configuration once per seed."""
    base = {"aggregation": "avg", **params}
    return [({**base, "candidate": candidate, "seed": s}, {"attempt": 1}) for s in seeds]


def _key(params: dict[str, Any]) -> tuple:
    return params.get("candidate"), params.get("seed")


class ConfirmationKind(StudyKind):
    name = "confirm"
    fixed = True
    batchable = True
    precisions = PRECISIONS
    per_pair = True
    phase, unit = "confirmation", "runs"
    shows_best = False  # the best single seed of any candidate answers nothing

    def study_name(self, federation: str, target: tuple[int, ...]) -> str:
        return f"{federation}/{target[0]}-{target[1]}/confirm"

    def task_from(self, name: str, attrs: dict[str, Any], budget: int | None) -> Task:
        return Task(name, self.name, tuple(attrs["pair"]), stored_config(name, attrs))

    def expected(self, task: Task) -> dict[str, Any]:
        return {
            "federation_hash": task.config.federation_hash,
            "kd_recipe": config_record(task.config)["kd"],
        }

    def record(self, task: Task, bundle: FederationBundle) -> dict[str, Any]:
        return {
            "mode": self.name,
            "pair": list(task.target),
            "federation": task.config.name,
            "config": config_record(task.config),
            **pair_identity(task.config, task.target),  # what a grown federation keeps it by
            **self.expected(task),
        }

    def queue(self, task: Task, trials: Sequence[FrozenTrial]) -> list[Queued]:
        return missing(task.wanted, trials, _key)

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
        params = {
            "temperature": trial.suggest_float("temperature", *T_LIMITS, log=True),
            "alpha": trial.suggest_float("alpha", 0.0, 1.0),
            "divergence": trial.suggest_categorical("divergence", list(DIVERGENCES)),
            "transfer_set": trial.suggest_categorical("transfer_set", list(TRANSFER_SETS)),
            "position": trial.suggest_categorical("position", ["a", "b"]),
            "aggregation": trial.suggest_categorical("aggregation", list(AGGREGATIONS)),
            "candidate": trial.suggest_int("candidate", 0, MAX_TRIAL),
            "seed": trial.suggest_int("seed", 0, MAX_SEED),
        }
        # Its seed is a parameter (shared with the default's run), not the trial number's.
        return kd_job(
            params, task, bundle, seed=params["seed"], device=device, precision=precision,
            prunable=False,
        )  # fmt: skip

    def describe(self, params: dict[str, Any]) -> str:
        return f"trial #{params.get('candidate')} seed {params.get('seed')}"
