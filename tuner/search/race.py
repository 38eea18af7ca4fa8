"""The race inside a pair study (docs/design.md §9): which rounds a study still needs, which
configuration leads, and when more rounds cannot change the answer — read from the study's
trials alone, so every worker of every machine decides the same.

A *round* is one configuration at one seed: one trial, its seed index in the user attr
``SEED_ATTR``. Seed index j is the same seed (:func:`round_seed`) for every configuration of
every pair, so two configurations compared on the seeds they share see the same batch orders
(paired). A configuration's seeds are always a prefix 0, 1, …, n−1.

The rule (SMAC's intensification, stated over the trials):

* the **incumbent** is the configuration with the most seeds, the higher mean among those;
* a **challenger** (fewer seeds) stays *alive* while its mean over its n seeds is at least the
  incumbent's mean over the same n seeds; an alive challenger gets seeds up to
  min(2n, incumbent's) — doubling, as SMAC: a lucky first seed costs one more round, a
  challenger that keeps up earns its place with as many seeds as the incumbent;
* once another configuration has as many seeds as the incumbent (a duel decided), the
  incumbent runs one seed more, up to ``MAX_SEEDS``: each challenge raises the bar;
* a challenger behind on its shared seeds, or whose first round was pruned, is out for good;
* the same-student defaults are enqueued first and race like any configuration.

The race **stops** when the last ``PATIENCE`` proposals brought no contender (a new configuration
that lost, or one proposed again), nothing is pending (no challenger alive, no round waiting or
running) and at least ``MIN_CONFIGURATIONS`` proposals were made, or at its cap (``--trials``:
rounds finished, pruned first rounds included). The answer is then decided on fresh seeds
(tuner.run.confirm): the incumbent against its same-student default.

Imports only the Optuna adapter of the tuner (tuner.store.adapter); the strategies and the bench
use it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from tuner.search.space import config_key
from tuner.store.adapter import fixed_params, trial_id_of
from tuner.store.records import is_default

#: User attr holding a round's seed index (0: the configuration's first round).
SEED_ATTR = "race_seed"
#: Seed index j runs with seed RACE_SEED_BASE + j: far from the fixed strategy's trial seeds
#: (seed · 1,000,003 + number), the confirmation's (2,000,000,011 on) and the bench's truth seeds
#: (1,500,000,001 on).
RACE_SEED_BASE = 1_000_000_007
#: Seeds a configuration gets in the race at most (the incumbent's ceiling).
MAX_SEEDS = 8
#: Configurations in a row that must lose before a pair stops (bench/search_simulated.py).
PATIENCE = 6
#: Configurations a pair tries at least before it may stop: the sampler's 5 start-up points and 7
#: it modelled (on the bench's noise model 10 gave 77 % power, 12 gave 80 % at the same median
#: rounds: a race settled on a poor incumbent found by chance is what it prevents).
MIN_CONFIGURATIONS = 12
#: Why a race stops, in words (RaceState.stop_reason gives the key).
STOPS = {
    "settled": "its last proposals all lost to the incumbent",
    "cap": "its cap of rounds (--trials) was reached",
}
_PENDING = (TrialState.WAITING, TrialState.RUNNING)


def round_seed(index: int) -> int:
    """The seed of round ``index`` of any configuration (shared: the comparisons are paired)."""
    return RACE_SEED_BASE + index


def _params(t: FrozenTrial) -> dict[str, Any]:
    # An enqueued round holds its whole configuration in fixed_params, also before it is suggested.
    return dict(fixed_params(t) or t.params)


@dataclass
class Config:
    """One configuration's rounds: gain per seed index, pending indexes, how it ended early."""

    key: tuple
    params: dict[str, Any]
    first: FrozenTrial  # its earliest round (what confirmation and the sampler name it by)
    is_default: bool = False
    values: dict[int, float] = field(default_factory=dict)
    pending: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    pruned: bool = False  # its first round was pruned: it lost early

    @property
    def n(self) -> int:
        """Seeds finished, counted as the prefix 0..n−1."""
        n = 0
        while n in self.values:
            n += 1
        return n

    def mean(self, n: int | None = None) -> float:
        """Mean gain over its first ``n`` seeds (all of them by default)."""
        n = self.n if n is None else n
        return statistics.fmean(self.values[j] for j in range(n))

    @property
    def broken(self) -> bool:
        """A round failed with no retry left: the configuration cannot be raced further."""
        return any(j not in self.values and j not in self.pending for j in self.failed)


@dataclass
class RaceState:
    """What a pair study's rounds say: its configurations, incumbent, rounds needed, verdict."""

    configs: list[Config]
    incumbent: Config | None
    needed: list[tuple[Config, int]]  # (configuration, seed index) to enqueue now
    streak: int  # proposals in a row, the latest last, that brought no contender
    pending: int  # rounds waiting or running
    rounds: int  # rounds finished (COMPLETE or PRUNED, as the budget counts them)
    proposals: int  # first rounds the sampler proposed or the run enqueued, repeats included

    def alive(self, c: Config) -> bool:
        return c is self.incumbent or _alive(c, self.incumbent)

    @property
    def settled(self) -> bool:
        """True when more rounds cannot change the answer (the stop rule)."""
        return self.settles()

    def settles(self, patience: int | None = None, floor: int | None = None) -> bool:
        """The stop rule with a ``patience`` and a ``floor`` of proposals (None: the race's
        ``PATIENCE`` and ``MIN_CONFIGURATIONS``, read when called: the bench sets them)."""
        return (
            self.incumbent is not None
            and not self.needed
            and not self.pending
            and self.streak >= (PATIENCE if patience is None else patience)
            and self.proposals >= (MIN_CONFIGURATIONS if floor is None else floor)
        )

    def stop_reason(
        self, budget: int | None, patience: int | None = None, floor: int | None = None
    ) -> str | None:
        """Why the race is over, a key of ``STOPS`` (None while it is not); ``patience`` and
        ``floor`` as :meth:`settles`."""
        if self.settles(patience, floor):
            return "settled"
        if budget is not None and self.rounds >= budget:
            return "cap"
        return None

    def summary(
        self, budget: int | None, patience: int | None = None, floor: int | None = None
    ) -> dict[str, Any]:
        """What a pair row shows of its race: rounds, configurations, the incumbent, why it
        stopped (``stopped``: a key of ``STOPS``, None while racing)."""
        inc = self.incumbent
        return {
            "rounds": self.rounds,
            "configurations": len(self.configs),
            "proposals": self.proposals,
            "incumbent_trial": None if inc is None else inc.first.number,
            "incumbent_seeds": None if inc is None else inc.n,
            "incumbent_gain_mean": None if inc is None else inc.mean(),
            "stopped": self.stop_reason(budget, patience, floor),
        }


def _alive(c: Config, incumbent: Config | None) -> bool:
    """Whether challenger ``c`` still keeps up with the incumbent on the seeds they share."""
    if incumbent is None or c.pruned or c.broken:
        return False
    n = c.n
    if n == 0:
        return bool(c.pending)  # its first round is still to come
    if n >= incumbent.n:
        return False  # as many seeds and not the incumbent: it lost the duel
    return c.mean(n) >= incumbent.mean(n)


def _rounds(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The study's rounds in order: surplus claims and claims not suggested yet left out."""
    return [t for t in sorted(trials, key=lambda t: t.number)
            if not t.user_attrs.get("surplus") and _params(t)]  # fmt: skip


def configurations(trials: Sequence[FrozenTrial]) -> list[Config]:
    """The study's configurations in the order of their first round."""
    return _configurations(_rounds(trials))


def _configurations(rounds: Sequence[FrozenTrial]) -> list[Config]:
    out: dict[tuple, Config] = {}
    for t in rounds:
        key = config_key(_params(t))
        c = out.get(key)
        if c is None:
            c = out[key] = Config(key, _params(t), t, is_default=is_default(t.user_attrs))
        j = int(t.user_attrs.get(SEED_ATTR, 0))
        if t.state == TrialState.COMPLETE and t.value is not None:
            c.values.setdefault(j, float(t.value))  # a duplicate round repeats the first
        elif t.state == TrialState.PRUNED and j == 0:
            c.pruned = True
        elif t.state in _PENDING:
            c.pending.add(j)
        elif t.state == TrialState.FAIL:
            c.failed.add(j)
    return list(out.values())


def race_state(trials: Sequence[FrozenTrial]) -> RaceState:
    """The race as the trials tell it (see the module docstring for the rule)."""
    rounds = _rounds(trials)
    configs = _configurations(rounds)
    by_key = {c.key: c for c in configs}
    raced = [c for c in configs if c.n and not c.pruned]
    incumbent = max(raced, key=lambda c: (c.n, c.mean(), -c.first.number), default=None)
    needed: list[tuple[Config, int]] = []
    if incumbent is not None:
        top = incumbent.n
        if top < MAX_SEEDS and any(c is not incumbent and c.n == top for c in raced):
            needed.append((incumbent, top))
        for c in configs:
            if c is not incumbent and c.n and _alive(c, incumbent):
                needed += [(c, j) for j in range(c.n, min(2 * c.n, top))]
    needed = [(c, j) for c, j in needed if j not in c.pending]
    # The streak counts proposals, not configurations: a sampler that proposes a configuration
    # again (e.g. a corner of the space it cannot learn more about) brings nothing new, and the
    # race must not wait for it to stop doing so.
    firsts = [
        t
        for t in rounds  # a retry is the proposal it retries, not another
        if int(t.user_attrs.get(SEED_ATTR, 0)) == 0 and "retry_of" not in t.user_attrs
    ]
    streak = 0
    for t in reversed(firsts):
        c = by_key[config_key(_params(t))]
        new = c.first.number == t.number
        if new and (c is incumbent or _alive(c, incumbent)):
            break
        streak += 1
    pending = sum(len(c.pending) for c in configs)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in rounds)
    return RaceState(configs, incumbent, needed, streak, pending, done, len(firsts))


def seen_by_sampler(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """What the sampler learns from (tuner.search.sampler): one trial per configuration, its
    first round, valued at the mean over the seeds it has. Repeated seeds would otherwise count
    as more evidence for the incumbent's neighbourhood, and a second seed's different value as
    a second point where there is one. A pruned first round is shown complete at its last
    reported gain (as TPE reads pruned trials): a sampler that ignores pruned trials, as the GP
    does, would otherwise propose the same pruned corner again and again (seen on real rounds:
    a pair ran 185 pruned rounds of one configuration)."""
    configs = {c.first.number: c for c in configurations(trials)}
    out = []
    for t in trials:
        c = configs.get(t.number)
        if c is None:  # a later round, or a repeat of a configuration: the first speaks for it
            if int(t.user_attrs.get(SEED_ATTR, 0)) == 0 and t.state in _PENDING:
                out.append(t)  # a proposal on its way: the liar of parallel samplers
            continue
        finished = t.params and t.datetime_complete is not None
        if c.n and finished and (t.state != TrialState.COMPLETE or t.value != c.mean()):
            t = _with_value(t, c.mean(), TrialState.COMPLETE)  # e.g. a first round failed, retried
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            last = t.intermediate_values[max(t.intermediate_values)]
            t = _with_value(t, last, TrialState.COMPLETE)
        out.append(t)
    return out


def _with_value(t: FrozenTrial, value: float, state: TrialState) -> FrozenTrial:
    copy = FrozenTrial(
        number=t.number, state=state, value=value, datetime_start=t.datetime_start,
        datetime_complete=t.datetime_complete, params=t.params, distributions=t.distributions,
        user_attrs=t.user_attrs, system_attrs=t.system_attrs,
        intermediate_values=t.intermediate_values, trial_id=trial_id_of(t),
    )  # fmt: skip
    return copy


__all__ = [
    "MAX_SEEDS",
    "MIN_CONFIGURATIONS",
    "PATIENCE",
    "RACE_SEED_BASE",
    "SEED_ATTR",
    "STOPS",
    "Config",
    "RaceState",
    "configurations",
    "race_state",
    "round_seed",
    "seen_by_sampler",
]
