"""Compare studies (``dkd-tune compare``, the Molo et al. poster's full factorial): one per
federation ``<federation>/compare``, one trial per divergence × aggregation × seed at the config's
``[compare]`` T and α. A trial is one round of the whole federation (every client's neighbourhood
round, objectives.run_federation_round); its value is the clients' mean head-2 accuracy. Every
trial is enqueued by the run (a fixed kind): the pool spreads the cells over its workers."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from objectives import (
    AGGREGATIONS,
    DIVERGENCES,
    FederationBundle,
    TrialSpec,
    run_federation_round,
)

from .base import Job, OnEval, Queued, StudyKind, Task, config_record, missing, stored_config

#: Seeds are a trial parameter; this bounds its (fixed) distribution, not how many run.
MAX_SEEDS = 1000


def cells(seeds: int) -> tuple[Queued, ...]:
    """Every cell × seed, seed-major (an interrupted run has whole seeds)."""
    return tuple(
        ({"divergence": d, "aggregation": a, "seed": s}, {"attempt": 1})
        for s in range(seeds)
        for d in DIVERGENCES
        for a in AGGREGATIONS
    )


def _key(params: dict[str, Any]) -> tuple:
    return params.get("divergence"), params.get("aggregation"), params.get("seed")


class CellKind(StudyKind):
    name = "compare"
    fixed = True
    phase, unit = "compare", "cells"
    value_name = "accuracy"
    metric = "mean head-2 accuracy (%)"

    def study_name(self, federation: str, target: tuple[int, ...]) -> str:
        return f"{federation}/compare"

    def task_from(self, name: str, attrs: dict[str, Any], budget: int | None) -> Task:
        return Task(name, self.name, (), stored_config(name, attrs))

    def expected(self, task: Task) -> dict[str, Any]:
        c = task.config
        return {
            "federation_hash": c.federation_hash,
            "kd_recipe": config_record(c)["kd"],
            "temperature": c.compare.temperature,
            "alpha": c.compare.alpha,
            "transfer_set": c.neighbourhood.transfer_set,
            "neighbours": [list(s) for s in c.neighbours],
        }

    def record(self, task: Task, bundle: FederationBundle) -> dict[str, Any]:
        return {
            "mode": self.name,
            "federation": task.config.name,
            "partition": task.config.federation.partition,
            "accuracy_before": [round(float(a), 4) for a in bundle.accuracy],
            "config": config_record(task.config),
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
            "divergence": trial.suggest_categorical("divergence", list(DIVERGENCES)),
            "aggregation": trial.suggest_categorical("aggregation", list(AGGREGATIONS)),
            "seed": trial.suggest_int("seed", 0, MAX_SEEDS - 1),
        }
        c = task.config

        def call(_on_eval: OnEval | None) -> tuple[list, float]:
            started = time.perf_counter()
            specs = [
                TrialSpec(k, tuple(ns), temperature=c.compare.temperature, alpha=c.compare.alpha,
                          divergence=params["divergence"], aggregation=params["aggregation"],
                          transfer_set=c.neighbourhood.transfer_set, seed=params["seed"])
                for k, ns in enumerate(c.neighbours)
            ]  # fmt: skip
            results = run_federation_round(bundle, specs, device=device, recipe=c.kd)
            return results, time.perf_counter() - started

        def finish(out: tuple[list, float]) -> tuple[float, dict[str, Any]]:
            results, seconds = out
            attrs = {
                "gain": statistics.fmean(r.gain for r in results),
                "seconds": seconds,
                "clients": [asdict(r) for r in results],
            }
            return statistics.fmean(r.accuracy_after for r in results), attrs

        return Job(params, {}, call, finish, prunable=False)

    def describe(self, params: dict[str, Any]) -> str:
        return f"{params.get('divergence')}/{params.get('aggregation')} seed {params.get('seed')}"
