"""The records dkd-tune keeps in Optuna's user attrs, typed (docs/design.md §4): the latest run's
settings on every study (``run``), a pair study's confirmation plan (``confirmation``) and the
mark of a default trial (``default``). Each is written (``to_attrs``) and read (``from_attrs``)
here and nowhere else, so the stored JSON has one owner; its form is unchanged since the keys
were introduced, and existing storages read as they did.

Reading an older form (the one rule): a record's keys that were added after it was first stored
are optional, and a key that is absent reads as the value that meant "off" when the key came:
``run.confirm`` 0, ``run.max_forgetting`` None, ``run.warm_start`` False, ``run.min_gain`` None
(a run before ``--min-gain``, or of a kind that answers nothing: :attr:`RunRecord.answer_min_gain`
judges it by the test alone), ``confirmation.looks`` one look at every seed. ``to_attrs`` leaves
those keys out at that value, as the writers always did, so a record read back equals the one
written (tests/tuner/test_records.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The study user attr holding the latest run's settings (:class:`RunRecord`).
RUN_ATTR = "run"
#: The pair study user attr naming what its confirmation runs (:class:`ConfirmationPlan`).
PLAN_ATTR = "confirmation"
#: The trial user attr marking a default trial (:class:`DefaultMark`).
DEFAULT_ATTR = "default"
#: The --min-gain of a run stored before the flag existed: its answer rested on the test alone.
LEGACY_MIN_GAIN = 0.0


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The latest run's settings, which ``dkd-tune worker`` reads to join it (``confirm``: the
    seeds a pair run confirms its candidates with once tuned, so a joining worker follows it
    into the confirmation; ``budget`` None: a fixed kind, whose queue is its budget)."""

    budget: int | None
    sampler: str
    pruner: str
    seed: int
    retries: int
    confirm: int = 0
    max_forgetting: float | None = None
    warm_start: bool = False
    min_gain: float | None = None

    @property
    def answer_min_gain(self) -> float:
        """The --min-gain the pair's answer is judged with (:data:`LEGACY_MIN_GAIN` where the
        run recorded none)."""
        return LEGACY_MIN_GAIN if self.min_gain is None else self.min_gain

    def to_attrs(self) -> dict[str, Any]:
        """The study user attrs that store it."""
        run: dict[str, Any] = {"budget": self.budget, "sampler": self.sampler,
                               "pruner": self.pruner, "seed": self.seed,
                               "retries": self.retries}  # fmt: skip
        if self.confirm:
            run["confirm"] = self.confirm
        if self.max_forgetting is not None:
            run["max_forgetting"] = self.max_forgetting
        if self.warm_start:
            run["warm_start"] = True
        if self.min_gain is not None:
            run["min_gain"] = self.min_gain
        return {RUN_ATTR: run}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> RunRecord | None:
        """The record in a study's user attrs (None: no run recorded one, e.g. a study whose
        creator died before its first run was recorded)."""
        run = attrs.get(RUN_ATTR)
        if not run:
            return None
        return cls(
            budget=run["budget"],
            sampler=run["sampler"],
            pruner=run["pruner"],
            seed=run["seed"],
            retries=run["retries"],
            confirm=run.get("confirm", 0),
            max_forgetting=run.get("max_forgetting"),
            warm_start=run.get("warm_start", False),
            min_gain=run.get("min_gain"),
        )


def budget_of(attrs: Mapping[str, Any]) -> int | None:
    """A study's recorded budget (None: no run recorded, or a fixed kind)."""
    run = RunRecord.from_attrs(attrs)
    return None if run is None else run.budget


@dataclass(frozen=True, slots=True)
class ConfirmationPlan:
    """What a pair's confirmation runs: its candidates (pair trial numbers), the fresh seeds they
    share, and after how many of them it decides (``looks``; the last is every seed)."""

    candidates: tuple[int, ...]
    seeds: tuple[int, ...]
    looks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "looks", tuple(self.looks) or (len(self.seeds),))

    @property
    def sequential(self) -> bool:
        """True when it decides at more than one look."""
        return len(self.looks) > 1

    def to_attrs(self) -> dict[str, Any]:
        """The pair study user attrs that store it (``looks`` only for a sequential plan)."""
        plan: dict[str, Any] = {"candidates": list(self.candidates), "seeds": list(self.seeds)}
        if self.sequential:
            plan["looks"] = list(self.looks)
        return {PLAN_ATTR: plan}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ConfirmationPlan | None:
        """The plan in a pair study's user attrs (None: never confirmed)."""
        plan = attrs.get(PLAN_ATTR)
        if not plan:
            return None
        return cls(plan["candidates"], plan["seeds"], plan.get("looks") or ())


@dataclass(frozen=True, slots=True)
class DefaultMark:
    """The mark of a default trial: which default it is (a pair study's position, a client
    study's aggregation)."""

    of: str

    def to_attrs(self) -> dict[str, Any]:
        """The trial user attrs that store it."""
        return {DEFAULT_ATTR: self.of}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> DefaultMark | None:
        """The mark in a trial's user attrs (None: not a default trial)."""
        return cls(attrs[DEFAULT_ATTR]) if DEFAULT_ATTR in attrs else None


def is_default(attrs: Mapping[str, Any]) -> bool:
    """True for the user attrs of a default trial."""
    return DEFAULT_ATTR in attrs


__all__ = [
    "DEFAULT_ATTR",
    "LEGACY_MIN_GAIN",
    "PLAN_ATTR",
    "RUN_ATTR",
    "ConfirmationPlan",
    "DefaultMark",
    "RunRecord",
    "budget_of",
    "is_default",
]
