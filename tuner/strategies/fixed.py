"""The fixed strategy: ``--trials`` single-seed trials from the sampler, then the best few
configurations and their defaults confirmed on fresh seeds at one look (docs/design.md §4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import Round, Strategy

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

#: Candidates the confirmation runs per pair (besides the defaults they are compared with).
TOP_CANDIDATES = 3


def trial_seed(seed: int, number: int) -> int:
    """A trial's seed: distinct per trial, reproducible per study (also a client trial's)."""
    return seed * 1_000_003 + number


class FixedStrategy(Strategy):
    name = "fixed"
    trials = 20
    confirm = 3
    sampler = "tpe"
    help = (f"N single-seed trials, then the {TOP_CANDIDATES} best and the default on fresh "
            "seeds")
    confirms = f"up to {TOP_CANDIDATES} best configurations and their defaults"

    def budget(self, trials: int) -> str:
        return f"{trials} trials each"

    def make_sampler(self, name: str, space: Any, seed: int) -> optuna.samplers.BaseSampler:
        from tuner.search.sampler import make_sampler

        return make_sampler(name, space, seed)

    def round(self, attrs: dict[str, Any], number: int, seed: int) -> Round:
        return Round(trial_seed(seed, number), prunable=True)

    def candidates(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The ``TOP_CANDIDATES`` best COMPLETE trials with distinct configurations (the first
        trial of a configuration run twice), then the same-position default of each."""
        from tuner.search.best import complete, defaults
        from tuner.search.space import config_key

        done = sorted(complete(trials), key=lambda t: (-t.value, t.number))
        chosen: dict[tuple, FrozenTrial] = {}
        for t in done:
            key = config_key(t.params)
            if key not in chosen and len(chosen) < TOP_CANDIDATES:
                chosen[key] = t
        by_position = defaults(trials)
        out = list(chosen.values())
        for position in dict.fromkeys(t.params["position"] for t in out):
            d = by_position.get(position)
            if d is not None and d not in out:
                out.append(d)
        return out

    def looks(self, seeds: int) -> list[int]:
        return [seeds]
