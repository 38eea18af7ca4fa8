"""The federation strategy (docs/design.md §9): the race, each pair starting from what the
other pair studies of its federation found. Before its own exploration a pair tries, once,
the incumbents of the sibling pairs whose race is over (tuner.search.federation); it settles by
the stop rule of tuner.search.federation.held (at the race's floor and patience: a lower one
measured worse). The confirmation on fresh seeds and ``--min-gain`` are the race's, unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .race import RaceStrategy

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from tuner.search.race import RaceState


class FederationStrategy(RaceStrategy):
    name = "federation"
    # The claim of a pair study's first trial (a default, enqueued at set-up) takes the proposals
    # (tuner.search.federation.SHARE_AT; kept here as a literal: options import this room without
    # optuna).
    share_at = 0
    # Pairs raced together (the pool's most-work-left order) all start before any settled, and
    # then take nothing: served one after another, each finds the ones before it settled.
    staggered = True
    help = (
        "the race, each pair first trying once the best configurations of the pairs of its "
        "federation that already settled (carried by the student's role)."
    )

    def budget(self, trials: int) -> str:
        return super().budget(trials) + "; pairs start from what settled pairs found"

    def shared(
        self,
        own: dict[str, Any],
        trials: Sequence[FrozenTrial],
        space: Any,
        siblings: Sequence[tuple[str, dict[str, Any], Sequence[FrozenTrial]]],
    ) -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
        from tuner.search.federation import PROPOSALS, proposals

        return tuple(proposals(own, trials, space, siblings, PROPOSALS))

    def contribution(self, state: RaceState) -> dict[str, Any]:
        from tuner.search.federation import contribution

        return contribution(state)

    def stop_rule(self, state: RaceState) -> tuple[int | None, int | None]:
        from tuner.search import federation

        if federation.held(state):
            return federation.PATIENCE, federation.FLOOR
        return None, None
