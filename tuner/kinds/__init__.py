"""Study kinds (docs/design.md §5): the contract in ``base``, one module per kind (``pair``,
``client``, ``cell``, ``confirmation``), the one study set-up for every kind (``setup``) and
the rule of a federation name, which a growing federation relaxes (``growth``).

May import: tuner.store, tuner.search, tuner.strategies.
"""

from .base import (
    Job,
    OnEval,
    Queued,
    StudyKind,
    Task,
    TunedKind,
    config_record,
    mode_of,
    own_configs,
)
from .cell import CellKind
from .client import ClientKind
from .confirmation import ConfirmationKind
from .growth import federation_clash, has_left
from .pair import PairKind

#: Every kind by the name its studies record in the user attr ``mode``.
KINDS: dict[str, StudyKind] = {
    k.name: k for k in (PairKind(), ClientKind(), CellKind(), ConfirmationKind())
}

#: The kinds a tuning run tunes, by ``--mode`` (a mode is named as its kind; tuner.options.MODES).
TUNED: dict[str, TunedKind] = {n: k for n, k in KINDS.items() if isinstance(k, TunedKind)}


def kind_of(attrs: dict) -> StudyKind | None:
    """The kind of a stored study from its user attrs (see :func:`~.base.mode_of`)."""
    mode = mode_of(attrs)
    return KINDS.get(mode) if mode else None


__all__ = [
    "KINDS",
    "TUNED",
    "Job",
    "OnEval",
    "Queued",
    "StudyKind",
    "Task",
    "TunedKind",
    "config_record",
    "federation_clash",
    "has_left",
    "kind_of",
    "own_configs",
]
