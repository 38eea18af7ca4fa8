"""Client studies of the neighbourhood mode: one per client ``<federation>/client-<k>``, searched
over T, α, divergence and aggregation; a trial is the client's two-head round against all of its
neighbours (objectives.run_neighbourhood_round, the Molo et al. setting). The round's transfer set
is fixed per run (``[neighbourhood].transfer_set``): recorded, never sampled. The default trial
(T = 1, α = 0.5, kl, avg) is enqueued once, when the study is created."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import optuna
from optuna.trial import FrozenTrial

from objectives import (
    FederationBundle,
    RoundResult,
    StudyConfig,
    TrialSpec,
    run_neighbourhood_round,
)
from tuner.formats import config_line
from tuner.options import TuneOptions, parse_clients
from tuner.strategies.fixed import trial_seed

from .base import (
    Job,
    OnEval,
    Queued,
    StudyKind,
    Task,
    TunedKind,
    config_record,
    missing_defaults,
    stored_config,
)
from .pair import RESULT_ATTRS, finish

#: The default trial of a client study: the pair default, with the plain average of teachers.
CLIENT_DEFAULT: dict[str, Any] = {
    "temperature": 1.0,
    "alpha": 0.5,
    "divergence": "kl",
    "aggregation": "avg",
}


@dataclass(frozen=True)
class NeighbourhoodSpace:
    """The searched part of ``[search]`` for client studies, and the round's fixed transfer set
    (``[neighbourhood].transfer_set``: recorded, never sampled)."""

    temperature: tuple[float, float]
    alpha: tuple[float, float]
    divergence: tuple[str, ...]
    aggregation: tuple[str, ...]
    grid_temperature: tuple[float, ...]
    grid_alpha: tuple[float, ...]
    transfer_set: str = "local"

    @classmethod
    def from_search(cls, space: Any, transfer_set: str) -> NeighbourhoodSpace:
        return cls(
            space.temperature,
            space.alpha,
            space.divergence,
            space.aggregation,
            space.grid_temperature,
            space.grid_alpha,
            transfer_set,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: list(v) for k, v in asdict(self).items() if k != "transfer_set"}
        out["transfer_set"] = self.transfer_set
        return out

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "temperature": trial.suggest_float("temperature", *self.temperature, log=True),
            "alpha": trial.suggest_float("alpha", *self.alpha),
            "divergence": trial.suggest_categorical("divergence", list(self.divergence)),
            "aggregation": trial.suggest_categorical("aggregation", list(self.aggregation)),
        }

    def grid(self) -> dict[str, list]:
        return {
            "temperature": list(self.grid_temperature),
            "alpha": list(self.grid_alpha),
            "divergence": list(self.divergence),
            "aggregation": list(self.aggregation),
        }

    def defaults(self) -> list[dict[str, Any]]:
        return [dict(CLIENT_DEFAULT)]


class ClientKind(TunedKind):
    name = "neighbourhood"
    prunable = True
    metric = "head-2 gain (pp)"
    phrases: ClassVar[dict[str, str]] = {
        **StudyKind.phrases,
        "neighbours": "learned from neighbours {have}, the config's [topology] gives {want}",
    }

    def study_name(self, federation: str, target: tuple[int, ...]) -> str:
        return f"{federation}/client-{target[0]}"

    def task_from(self, name: str, attrs: dict[str, Any], budget: int | None) -> Task:
        stored = attrs["search"]
        space = NeighbourhoodSpace(
            **{k: tuple(v) for k, v in stored.items() if k != "transfer_set"},
            transfer_set=stored["transfer_set"],
        )
        target = (attrs["client"], *attrs["neighbours"])
        return Task(name, self.name, target, stored_config(name, attrs), space, budget)

    def expected(self, task: Task) -> dict[str, Any]:
        search = task.space.to_dict()
        return {
            "federation_hash": task.config.federation_hash,
            "neighbours": list(task.target[1:]),
            "kd_recipe": config_record(task.config)["kd"],
            **{f"search.{k}": search[k] for k in ("transfer_set", "divergence", "aggregation")},
        }

    def record(self, task: Task, bundle: FederationBundle) -> dict[str, Any]:
        client = task.target[0]
        return {
            "mode": self.name,
            "client": client,
            "federation": task.config.name,
            "accuracy": round(float(bundle.accuracy[client]), 4),
            "local_accuracy": round(float(bundle.local_accuracy[client]), 4),
            "topology": asdict(task.config.topology),
            "config": config_record(task.config),
            "federation_hash": bundle.hash,
            "kd_recipe": config_record(task.config)["kd"],
            "search": task.space.to_dict(),
            "neighbours": list(task.target[1:]),
        }

    def queue(self, task: Task, trials: Sequence[FrozenTrial]) -> list[Queued]:
        return missing_defaults(task, trials, "aggregation")

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
        client, neighbours = task.target[0], list(task.target[1:])
        seed_ = trial_seed(seed, trial.number)
        transfer_set = task.space.transfer_set

        spec = TrialSpec(client, tuple(neighbours), transfer_set=transfer_set, seed=seed_,
                         **params)  # fmt: skip

        def call(on_eval: OnEval | None) -> RoundResult:
            return run_neighbourhood_round(bundle, replace(spec, on_eval=on_eval), device=device,
                                           recipe=task.config.kd)  # fmt: skip

        attrs = {"client": client, "neighbours": neighbours, "transfer_set": transfer_set,
                 "seed": seed_}  # fmt: skip
        fields = (*RESULT_ATTRS, "head1_accuracy_after")
        return Job(params, attrs, call, lambda r: finish(r, fields))

    def describe(self, params: dict[str, Any]) -> str:
        return f"{config_line(params, 'alpha')} over the neighbours"

    def run_space(self, config: StudyConfig, space: Any) -> NeighbourhoodSpace:
        config.check_two_heads()
        return NeighbourhoodSpace.from_search(space, config.neighbourhood.transfer_set)

    def run_targets(self, config: StudyConfig, opts: TuneOptions) -> list[tuple[int, ...]]:
        sets = config.neighbours
        return [(k, *sets[k]) for k in parse_clients(opts.clients, config.federation.participants)]

    def run_what(self, config: StudyConfig) -> str:
        return (f"client(s) in neighbourhood mode ({config.topology.kind} graph, transfer set "
                f"{config.neighbourhood.transfer_set})")  # fmt: skip
