"""How a pair study spends its budget (docs/design.md §9): one :class:`Strategy` per
``--strategy`` value. A strategy owns everything a pair study does differently under it — the
sampler's view, each round's seed and whether it may be pruned, what to enqueue before a claim
and when to stop, the summary columns, the confirmation's candidates and looks — and its
defaults (``--trials``, ``--confirm``, ``--sampler``). No module outside this room compares
strategy names: they ask :func:`strategy` for the object.

May import: tuner.search.
"""

from __future__ import annotations

from .base import SUMMARY_KEYS, Claim, Round, Strategy
from .federation import FederationStrategy
from .fixed import FixedStrategy
from .race import RaceStrategy

#: Every strategy by its name (the value of ``--strategy`` and of a pair study's attr ``strategy``).
STRATEGIES: dict[str, Strategy] = {
    s.name: s for s in (RaceStrategy(), FixedStrategy(), FederationStrategy())
}
#: The strategy of a run that names none (``--strategy``'s default).
DEFAULT = "race"
#: How a study, task or run that names no strategy is read: pair studies written before the race
#: existed spent their budget this way, and kinds that are not raced (client studies) take their
#: defaults (``--trials``, ``--sampler``) from it.
UNNAMED = "fixed"


def strategy(name: str | None) -> Strategy:
    """The strategy called ``name`` (None: :data:`UNNAMED`). Raises KeyError for an unknown
    name (``tuner.options.check_options`` refuses one in a line before anything runs)."""
    return STRATEGIES[UNNAMED if name is None else name]


def strategy_of(attrs: dict) -> Strategy:
    """The strategy a stored pair study was run with, from its user attrs (the one rule for a
    study without the attr: :data:`UNNAMED`)."""
    return strategy(attrs.get("strategy"))


__all__ = [
    "DEFAULT",
    "STRATEGIES",
    "SUMMARY_KEYS",
    "UNNAMED",
    "Claim",
    "Round",
    "Strategy",
    "strategy",
    "strategy_of",
]
