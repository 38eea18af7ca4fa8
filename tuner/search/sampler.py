"""The sampler a study is served with (``--sampler``), and what a raced study shows it.

In a raced pair study (tuner.search.race) several rounds hold the same configuration at other
seeds. The sampler sees one trial per configuration — its first round, valued at the mean over
the seeds it has (:func:`tuner.search.race.seen_by_sampler`) — through :class:`RaceSampler`, a
wrapper that hands the sampler a view of the study instead of the study. With the race's small
number of configurations per pair, TPE starts modelling after ``RACE_STARTUP`` quasi-random
points (Optuna's default waits for 10) and models the parameters jointly (``multivariate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from tuner.search.race import seen_by_sampler
from tuner.store.adapter import StudyView

#: Start-up points of the race's sampler before TPE models (the defaults count among them).
RACE_STARTUP = 5


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler that leaves stopping to the budget: its own after_trial calls study.stop()
    once the grid is covered, which raises outside study.optimize (we ask and tell). Past that
    point it revisits grid points at random, which the budget then bounds."""

    def after_trial(self, study, trial, state, values) -> None:  # type: ignore[override]
        return None


def make_sampler(
    name: str, space: Any, seed: int, *, race: bool = False
) -> optuna.samplers.BaseSampler:
    """The sampler of ``--sampler name`` for a study over ``space`` (None: a fixed kind, whose
    trials are all enqueued); ``race``: a raced pair study (see the module docstring)."""
    if name == "random" or space is None:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    elif name == "grid":
        sampler = _GridSampler(space.grid(), seed=seed)
    elif name == "gp":
        sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=RACE_STARTUP)
    elif race:
        sampler = optuna.samplers.TPESampler(
            seed=seed, constant_liar=True, n_startup_trials=RACE_STARTUP, multivariate=True,
        )  # fmt: skip
    else:
        # constant_liar: running trials count as bad guesses, so parallel workers do not all
        # sample the same promising point. With --max-forgetting each trial records its
        # constraint (tuner.worker.lifecycle): TPE then samples away from trials that forgot
        # too much.
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return RaceSampler(sampler) if race and space is not None else sampler


def _seen(study: optuna.Study) -> optuna.Study:
    """The study as the sampler sees it in a race: only what :func:`seen_by_sampler` keeps (a
    view through one of Optuna's private parts: tuner.store.adapter)."""
    return StudyView(study, seen_by_sampler)


class RaceSampler(optuna.samplers.BaseSampler):
    """A sampler that learns from one point per configuration (see the module docstring)."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(_seen(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.inner.sample_relative(_seen(study), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(
            _seen(study), trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


__all__ = ["RACE_STARTUP", "RaceSampler", "make_sampler"]
