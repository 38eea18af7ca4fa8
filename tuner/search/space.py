"""The search space of a pair study, read from the config's ``[search]`` table.

``objectives`` passes ``[search]`` through unvalidated; it is checked here field by field, and an
unknown or bad field is named in a one-line error. The defaults cover all of docs/design.md §1:
every divergence, every transfer set, both positions, both aggregations, temperature on a log
scale.
``aggregation`` is sampled only when the transfer set has several teachers (``public+self``), so
it never appears as a meaningless parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from objectives import AGGREGATIONS, DIVERGENCES, TRANSFER_SETS
from objectives.config import suggest
from tuner.errors import UsageError

POSITIONS = ("a", "b")
#: Temperatures docs/design.md §2 guarantees finite losses and gradients for.
T_LIMITS = (0.05, 100.0)
#: The default trial of docs/design.md §1 (one per position).
DEFAULT_PARAMS: dict[str, Any] = {
    "temperature": 1.0,
    "alpha": 0.5,
    "divergence": "kl",
    "transfer_set": "public",
}
#: Transfer sets with more than one teacher, where ``aggregation`` means something.
MULTI_TEACHER = ("public+self",)


def config_key(params: Mapping[str, Any]) -> tuple:
    """A configuration's identity: its parameters, sorted (the race's configurations, the fixed
    strategy's distinct candidates)."""
    return tuple(sorted(params.items()))


@dataclass(frozen=True)
class SearchSpace:
    """Ranges and choices; ``grid_*`` are the values the grid sampler walks for the two floats."""

    temperature: tuple[float, float] = (0.25, 32.0)  # log scale
    alpha: tuple[float, float] = (0.0, 1.0)
    divergence: tuple[str, ...] = tuple(DIVERGENCES)
    transfer_set: tuple[str, ...] = TRANSFER_SETS
    position: tuple[str, ...] = POSITIONS
    aggregation: tuple[str, ...] = AGGREGATIONS
    grid_temperature: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    grid_alpha: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)

    def to_dict(self) -> dict[str, list]:
        return {k: list(v) for k, v in asdict(self).items()}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample (or, for an enqueued trial, read back) one configuration."""
        params: dict[str, Any] = {
            "temperature": trial.suggest_float("temperature", *self.temperature, log=True),
            "alpha": trial.suggest_float("alpha", *self.alpha),
            "divergence": trial.suggest_categorical("divergence", list(self.divergence)),
            "transfer_set": trial.suggest_categorical("transfer_set", list(self.transfer_set)),
            "position": trial.suggest_categorical("position", list(self.position)),
        }
        if params["transfer_set"] in MULTI_TEACHER:
            params["aggregation"] = trial.suggest_categorical("aggregation", list(self.aggregation))
        return params

    def grid(self) -> dict[str, list]:
        """The grid sampler's space (aggregation included; ignored where it does not apply)."""
        return {
            "temperature": list(self.grid_temperature),
            "alpha": list(self.grid_alpha),
            "divergence": list(self.divergence),
            "transfer_set": list(self.transfer_set),
            "position": list(self.position),
            "aggregation": list(self.aggregation),
        }

    def defaults(self) -> list[dict[str, Any]]:
        """The default trials' parameters, one per position in the space."""
        return [{**DEFAULT_PARAMS, "position": p} for p in self.position]


_CHOICES: dict[str, tuple[str, ...]] = {
    "divergence": tuple(DIVERGENCES),
    "transfer_set": TRANSFER_SETS,
    "position": POSITIONS,
    "aggregation": AGGREGATIONS,
}
_RANGES: dict[str, tuple[float, float]] = {"temperature": T_LIMITS, "alpha": (0.0, 1.0)}
_GRIDS: dict[str, str] = {"grid_temperature": "temperature", "grid_alpha": "alpha"}


def parse_space(raw: Mapping[str, Any] | None, source: str = "[search]") -> SearchSpace:
    """Validate a ``[search]`` table; missing fields keep their defaults."""
    raw = dict(raw or {})
    known = [f for f in SearchSpace.__dataclass_fields__]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{source}: [search].{key}"
        if key not in known:
            raise UsageError(f"{source}: unknown field [search].{key} ({suggest(key, known)})")
        if key in _RANGES:
            values[key] = _range(where, value, *_RANGES[key])
        elif key in _CHOICES:
            values[key] = _choices(where, value, _CHOICES[key])
        else:
            values[key] = _numbers(where, value)
    space = SearchSpace(**values)
    for grid_key, range_key in _GRIDS.items():
        low, high = getattr(space, range_key)
        outside = [v for v in getattr(space, grid_key) if not low <= v <= high]
        if outside:
            raise UsageError(
                f"{source}: [search].{grid_key} has {outside[0]} outside [search].{range_key} = "
                f"[{low}, {high}]: widen the range or drop the value"
            )
    # The default trials are enqueued in every study; their categorical values must be choices.
    for key in ("divergence", "transfer_set"):
        if DEFAULT_PARAMS[key] not in getattr(space, key):
            raise UsageError(
                f"{source}: [search].{key} must include {DEFAULT_PARAMS[key]!r}: every study "
                "starts with the default trial (T=1, alpha=0.5, kl, public) to compare against"
            )
    return space


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _range(where: str, value: Any, lo: float, hi: float) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
        raise UsageError(f"{where} must be [low, high], two numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not lo <= low <= high <= hi or (where.endswith("temperature") and low <= 0):
        raise UsageError(f"{where} = {value!r} is invalid: need {lo} <= low <= high <= {hi}")
    return low, high


def _choices(where: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise UsageError(f"{where} must be a non-empty list of names from {', '.join(allowed)}")
    for v in value:
        if v not in allowed:
            raise UsageError(f"{where}: unknown {v!r}, choose from {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise UsageError(f"{where} lists a name twice: {value!r}")
    return tuple(value)


def _numbers(where: str, value: Any) -> tuple[float, ...]:
    if not (isinstance(value, list) and value and all(_is_number(v) for v in value)):
        raise UsageError(f"{where} must be a non-empty list of numbers, got {value!r}")
    return tuple(float(v) for v in value)
