"""The race strategy (docs/design.md §9): a configuration runs one seed and earns more only
while it keeps up with the incumbent on shared seeds (the rule: tuner.search.race); a pair stops
when more rounds cannot change its answer; the incumbent is confirmed against its default on
fresh seeds, sequentially (decided after ``FIRST_LOOK`` seeds where that is clear)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import SUMMARY_KEYS, Claim, Round, Strategy

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from tuner.search.race import RaceState

#: Fresh seeds of the race's first confirmation look (tuner.read.decision gives it the level
#: FIRST_LEVEL of the error budget).
FIRST_LOOK = 3


class RaceStrategy(Strategy):
    name = "race"
    # The cap is rarely reached: the race stops a pair when more rounds cannot change its answer.
    trials = 200
    # Two configurations (the incumbent, the default) on 3 fresh seeds, on 8 where 3 do not decide.
    confirm = 8
    # GPSampler: on a noise model of the default federation it came within 0.24 pp of the grid's
    # best where TPE stayed 1.3 pp below (bench/RESULTS.md).
    sampler = "gp"
    round_attrs = ("race_seed",)
    decides_before_claim = True
    phase, unit = "race", "rounds"
    help = ("a new configuration runs one seed and earns more only while it keeps up with the "
            "pair's best on the seeds they share; a pair stops when its last configurations all "
            "lost; then the best and its default run on --confirm fresh seeds.")
    confirms = "each race's incumbent and its default"

    def budget(self, trials: int) -> str:
        return (f"raced: at most {trials} rounds each, fewer where more cannot change the "
                "answer")  # fmt: skip

    def make_sampler(self, name: str, space: Any, seed: int) -> optuna.samplers.BaseSampler:
        from tuner.search.sampler import make_sampler

        return make_sampler(name, space, seed, race=True)

    def round(self, attrs: dict[str, Any], number: int, seed: int) -> Round:
        from tuner.search.race import SEED_ATTR, round_seed

        # The seed index was enqueued with the round (0: a new configuration's first round).
        # Only a first round may be pruned: a pruned later round would leave a hole in the seeds.
        index = int(attrs.get(SEED_ATTR, 0))
        return Round(round_seed(index), prunable=index == 0, attrs={SEED_ATTR: index})

    def before_claim(self, trials: Sequence[FrozenTrial], budget: int | None) -> Claim:
        from tuner.search.race import SEED_ATTR, STOPS, race_state

        state = race_state(trials)
        reason = state.stop_reason(budget, *self.stop_rule(state))
        if reason is not None:
            return Claim(stopped=reason, reason=f"race over, {STOPS[reason]}")
        # A default's later rounds are not marked ``default``: that mark names the one enqueued
        # default trial per position (the race knows the configuration by its first round).
        return Claim(tuple((c.params, {SEED_ATTR: i, "attempt": 1}) for c, i in state.needed))

    def summary(self, trials: Sequence[FrozenTrial], budget: int | None) -> dict[str, Any]:
        from tuner.search.race import race_state

        state = race_state(trials)
        summary = {**state.summary(budget, *self.stop_rule(state)), **self.contribution(state)}
        return {k: summary.get(k) for k in SUMMARY_KEYS}

    def contribution(self, state: RaceState) -> dict[str, Any]:
        """What the federation contributed to the pair (SUMMARY_KEYS' federation columns);
        nothing for a pair that races alone."""
        return {}

    def stop_rule(self, state: RaceState) -> tuple[int | None, int | None]:
        """The patience and the floor of proposals a pair in ``state`` settles by (None: the
        race's ``PATIENCE`` and ``MIN_CONFIGURATIONS``)."""
        return None, None

    def candidates(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The incumbent (its first round) and its same-student default (the default alone when
        it is the incumbent). One tuned candidate: the test on fresh seeds then needs no
        correction for having picked it among several."""
        from tuner.search.best import defaults
        from tuner.search.race import race_state

        incumbent = race_state(trials).incumbent
        if incumbent is None:
            return []
        default = defaults(trials).get(incumbent.params["position"])
        first = [t for t in trials if t.number == incumbent.first.number]
        return first + ([] if default is None or incumbent.is_default else [default])

    def looks(self, seeds: int) -> list[int]:
        return [FIRST_LOOK, seeds] if seeds > FIRST_LOOK else [seeds]
