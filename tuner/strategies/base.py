"""The strategy contract (docs/design.md §9), in the spirit of SMAC's intensifier: one object
owns the rule a pair study's budget is spent by. Every method is a function of the study's
trials (and the run's settings), never of memory, so any worker on any machine, a joining
``dkd-tune worker`` and a rerun decide the same.

Errors: a method raises nothing for a study in any state (no trials, only failures, a study
written by an earlier version); :meth:`Strategy.candidates` returns [] when there is nothing to
confirm yet. The contract is tested once for every strategy
(tests/tuner/test_strategies_contract.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # optuna is imported by the methods that use it: options only read defaults
    import optuna
    from optuna.trial import FrozenTrial

#: The columns a pair row shows of how its study spent its budget (:meth:`Strategy.summary`),
#: and what its federation contributed (a strategy that shares: proposals taken, where the
#: incumbent came from, how the first proposal did here against the default).
SUMMARY_KEYS = ("rounds", "configurations", "incumbent_trial", "incumbent_seeds",
                "incumbent_gain_mean", "stopped", "federation_proposals", "federation_incumbent",
                "federation_guess_lead")  # fmt: skip


@dataclass(frozen=True)
class Round:
    """How one claimed pair trial runs: its seed, whether a pruner may stop it, and the user
    attrs the strategy records on it."""

    seed: int
    prunable: bool
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """What a strategy decides before a worker claims a trial of its study: the trials to
    enqueue first (parameters, user attrs), or why the study is done (``stopped``: a key the
    study records in its attr ``stopped``; ``reason``: the same in words)."""

    enqueue: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = ()
    stopped: str | None = None
    reason: str = ""


class Strategy(ABC):
    """Base class of the strategies; see the module docstring."""

    #: ``--strategy`` value and the pair study's attr ``strategy``.
    name: ClassVar[str] = ""
    #: Default ``--trials`` (a cap for the race, the exact count for the fixed strategy).
    trials: ClassVar[int] = 0
    #: Default ``--confirm``: fresh seeds per confirmed candidate.
    confirm: ClassVar[int] = 0
    #: Default ``--sampler``.
    sampler: ClassVar[str] = "tpe"
    #: Trial user attrs a failed trial's retry carries over (the round's identity).
    round_attrs: ClassVar[tuple[str, ...]] = ()
    #: True when :meth:`before_claim` reads the study's trials (a race); False spares every
    #: claim of its studies that read.
    decides_before_claim: ClassVar[bool] = False
    #: The phase a run spends its pair studies' budget in and what one trial is, in words (the
    #: progress display: "race: 3/10 pairs settled, 120 rounds done").
    phase: ClassVar[str] = "tuning"
    unit: ClassVar[str] = "trials"
    #: The claim (trial number) of a pair study that takes proposals from the other pair studies
    #: of its federation (:meth:`shared`); None: the strategy takes none. One number: trial
    #: numbers are unique per study, so exactly one claim does it, once.
    share_at: ClassVar[int | None] = None
    #: True when a worker serves its pair studies one after another, in the run's pair order
    #: (the first with work left), instead of the one with the most work left: pairs then
    #: settle in turn and a later pair's share claim finds the earlier ones settled.
    staggered: ClassVar[bool] = False
    #: What it does, in a sentence (``--strategy``'s help).
    help: ClassVar[str] = ""
    #: What its confirmation runs, in words (the confirmation's first line).
    confirms: ClassVar[str] = ""

    @abstractmethod
    def budget(self, trials: int) -> str:
        """The run's first line on what ``--trials`` means under this strategy."""

    @abstractmethod
    def make_sampler(self, name: str, space: Any, seed: int) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of ``--sampler name`` for a pair study over ``space``, with the
        view of the study this strategy gives it."""

    @abstractmethod
    def round(self, attrs: dict[str, Any], number: int, seed: int) -> Round:
        """How the claimed trial ``number`` (its user attrs ``attrs`` as enqueued) runs, in a run
        whose ``--seed`` (a joining worker's own) is ``seed``."""

    def before_claim(self, trials: Sequence[FrozenTrial], budget: int | None) -> Claim:
        """What to enqueue before the next claim, or why the study is done. Default: nothing
        (the budget alone ends the study)."""
        return Claim()

    def shared(
        self,
        own: dict[str, Any],
        trials: Sequence[FrozenTrial],
        space: Any,
        siblings: Sequence[tuple[str, dict[str, Any], Sequence[FrozenTrial]]],
    ) -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
        """What the claim numbered :attr:`share_at` enqueues (parameters, user attrs) in the pair
        study with attrs ``own``, its ``trials`` and ``space``, from the ``siblings`` (name,
        attrs, trials: the other pair studies of its federation whose race is over). Default:
        nothing."""
        return ()

    def summary(self, trials: Sequence[FrozenTrial], budget: int | None) -> dict[str, Any]:
        """A pair row's columns :data:`SUMMARY_KEYS` (None where the strategy has no such
        figure)."""
        return dict.fromkeys(SUMMARY_KEYS)

    @abstractmethod
    def candidates(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The trials whose configurations the confirmation re-runs on fresh seeds, each tuned
        one's same-student default among them ([] when nothing is ready)."""

    @abstractmethod
    def looks(self, seeds: int) -> list[int]:
        """After how many of its ``seeds`` fresh seeds the confirmation decides (the last look
        is ``seeds``; tuner.read.decision splits the test level over the looks)."""
