"""The one rule for a study's best trial and the one lookup of the same-student default, over
single tuning trials (docs/design.md §4). Confirmed figures (means over fresh seeds) are read by
``tuner.read.answer.recommendation`` on top of these; the warm start, the candidates a run
confirms, the pair rows and the report all start here.

It imports only the default mark of ``tuner.store.records``: the kinds (through
``tuner.search.warm``) use it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState

from tuner.store.records import DefaultMark, is_default


def complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The COMPLETE trials that have a value."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The best COMPLETE trial: the highest value, the earliest on ties."""
    return max(complete(trials), key=lambda t: (t.value, -t.number), default=None)


def defaults(trials: Sequence[FrozenTrial]) -> dict[str, FrozenTrial]:
    """The COMPLETE default trials by the position they name (``a``/``b``; a client study's by
    its aggregation)."""
    return {mark.of: t for t in complete(trials)
            if (mark := DefaultMark.from_attrs(t.user_attrs)) is not None}  # fmt: skip


def default_for(trials: Sequence[FrozenTrial], trial: FrozenTrial) -> FrozenTrial | None:
    """The default trial with the same student as ``trial`` (the same position)."""
    return defaults(trials).get(trial.params.get("position"))


def improvements(trials: Sequence[FrozenTrial]) -> list[tuple[float, FrozenTrial]]:
    """(gain over the same-student default, trial) for each COMPLETE non-default trial that beat
    it, on single trials."""
    base = defaults(trials)
    out = []
    for t in complete(trials):
        d = base.get(t.params.get("position"))
        if not is_default(t.user_attrs) and d is not None and t.value > d.value:
            out.append((t.value - d.value, t))
    return out


__all__ = ["best_trial", "complete", "default_for", "defaults", "improvements"]
