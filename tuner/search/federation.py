"""What a pair study takes from the other pair studies of its federation (``--strategy
federation``, docs/design.md §9): before its own exploration, the incumbents of the sibling
pair studies whose race is over, the largest lead over their default first, carried by the
student's role (tuner.search.warm). Each runs one seed and is raced like any configuration: one
that does not hold here costs one round.

Exactly once: the claim numbered ``SHARE_AT`` (the study's first trial, a default enqueued when
the study was set up) enqueues them. Trial numbers are unique per study, so one claim in one
process does it however many workers share the study, and a rerun never does it again (a claim
killed before its enqueue leaves the study to race alone, as ``--strategy race``).

A pair whose incumbent is its default or one of the federation's proposals settles by
``FLOOR`` and ``PATIENCE`` (:func:`held`): a knob for settling sooner where the federation's
guesses stand. Measured on the bench's noise model (bench/RESULTS.md), a lower floor cost gap
and power more than it saved rounds, so both are the race's own. Everything here is a function
of stored trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.trial import FrozenTrial

from tuner.search.race import SEED_ATTR, Config, RaceState, race_state
from tuner.search.space import SearchSpace
from tuner.search.warm import Ranked, Sibling, carried, take

#: The user attr naming where a configuration from the federation came from:
#: ``<sibling study>#<trial number of its incumbent's first round>``.
FEDERATION_ATTR = "federation_from"
#: The claim (trial number) that enqueues the federation's proposals: the study's first.
SHARE_AT = 0
#: Sibling incumbents a pair takes (at most, once).
PROPOSALS = 3
#: Proposals (defaults and the federation's included) a pair whose federation proposals held
#: makes at least before it may settle: the race's MIN_CONFIGURATIONS. With 8 and patience 4 the
#: bench's pairs used 1.9 fewer rounds on average but the later pairs, the ones it shortens,
#: ended 0.12 pp further from the grid's best and power fell a point (bench/RESULTS.md).
FLOOR = 12
#: Proposals in a row that must lose before such a pair settles: the race's PATIENCE.
PATIENCE = 6


def default_of(configs: Sequence[Config], c: Config) -> Config | None:
    """The same-student default among ``configs`` (None when it has not run yet)."""
    position = c.params.get("position")
    return next((d for d in configs if d.is_default and d.params.get("position") == position), None)


def margin(state: RaceState) -> float | None:
    """How far a race's incumbent leads its same-student default, on the seeds both finished
    (None when the default is the incumbent, has no finished round, or leads)."""
    inc = state.incumbent
    if inc is None or inc.is_default:
        return None
    default = default_of(state.configs, inc)
    if default is None or not default.n:
        return None
    n = min(inc.n, default.n)
    lead = inc.mean(n) - default.mean(n)
    return lead if lead > 0 else None


def proposals(
    own: dict[str, Any],
    own_trials: Sequence[FrozenTrial],
    space: SearchSpace,
    others: Sequence[Sibling],
    k: int = PROPOSALS,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Up to ``k`` (params, user attrs) to enqueue in the study with attrs ``own``: the
    incumbents of the ``others`` (the sibling pair studies whose race is over: the caller's
    choice) that lead their default, the largest lead first; those outside the space or
    already tried here skipped."""
    ranked: list[Ranked] = []
    for name, attrs, trials in others:
        state = race_state(trials)
        lead = margin(state)
        if lead is not None and state.incumbent is not None:
            first = state.incumbent.first
            ranked.append((-lead, name, first.number, carried(own, attrs, state.incumbent.params)))
    return take(ranked, own_trials, space, k,
                lambda name, number: {FEDERATION_ATTR: f"{name}#{number}", SEED_ATTR: 0,
                                      "attempt": 1})  # fmt: skip


def contribution(state: RaceState) -> dict[str, Any]:
    """What the federation contributed to a pair, for its row (status, export, report, note):
    how many proposals it took, where its incumbent came from (``<study>#<trial>``, None when
    its own search found it), and how the federation's best guess (the first proposal: the
    largest lead among the siblings) did here, its lead over its same-student default in pp on
    the seeds both finished (None before)."""
    taken = sorted((c for c in state.configs if FEDERATION_ATTR in c.first.user_attrs),
                   key=lambda c: c.first.number)  # fmt: skip
    inc = state.incumbent
    lead = None
    if taken:
        guess = taken[0]
        default = default_of(state.configs, guess)
        if default is not None and default.n and guess.n:
            n = min(guess.n, default.n)
            lead = round(guess.mean(n) - default.mean(n), 4)
    return {
        "federation_proposals": len(taken),
        "federation_incumbent": None if inc is None else inc.first.user_attrs.get(FEDERATION_ATTR),
        "federation_guess_lead": lead,
    }


def held(state: RaceState) -> bool:
    """True when the study took proposals from the federation and its incumbent is its default
    or one of them: what the federation knew still stands here."""
    if not any(FEDERATION_ATTR in c.first.user_attrs for c in state.configs):
        return False
    inc = state.incumbent
    return inc is not None and (inc.is_default or FEDERATION_ATTR in inc.first.user_attrs)


__all__ = [
    "FEDERATION_ATTR",
    "FLOOR",
    "PATIENCE",
    "PROPOSALS",
    "SHARE_AT",
    "contribution",
    "default_of",
    "held",
    "margin",
    "proposals",
]
