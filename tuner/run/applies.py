"""Which run settings a kind of study uses (docs/design.md §5): the one place a phase learns what
it ignores, so every flag composes with the defaults instead of the run branching on kind names.

A run has phases (the pair studies, then their confirmation; or the client studies; or compare
cells), each served by the pool with the same options. A setting given away from its default
that no kind of a phase uses is *ignored* by that phase, said once in one line; a setting that
no phase of the run uses at all is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tuner.errors import UsageError
from tuner.kinds import StudyKind
from tuner.options import TuneOptions


@dataclass(frozen=True)
class Use:
    """One setting: its option field, its flag, and whether a kind uses a given value of it."""

    field: str
    flag: str
    uses: Callable[[StudyKind, object], bool]
    why: str  # why a kind that does not use it does not (completes "... not used: ")


USES = (
    Use("batch_trials", "--batch-trials", lambda k, v: k.batchable,
        "its trials run one at a time"),
    Use("precision", "--precision", lambda k, v: v in k.precisions, "its rounds run in fp32"),
    Use("pruner", "--pruner", lambda k, v: k.prunable, "its trials run to the end"),
    Use("sampler", "--sampler", lambda k, v: not k.fixed, "its configurations are given"),
    Use("strategy", "--strategy", lambda k, v: k.races, "its studies are not raced"),
    Use("min_gain", "--min-gain", lambda k, v: k.races, "it recommends nothing against a default"),
    Use("warm_start", "--warm-start", lambda k, v: type(k).warm_start is not StudyKind.warm_start,
        "it has no warm start"),
)  # fmt: skip


def _flag(use: Use, value: object) -> str:
    if isinstance(value, bool):
        return f"{use.flag} {'on' if value else 'off'}"
    return f"{use.flag} {value}"


def given(opts: TuneOptions) -> list[Use]:
    """The settings ``opts`` sets away from their defaults (those of its strategy and mode)."""
    defaults = TuneOptions(strategy=opts.strategy, mode=opts.mode)
    return [u for u in USES if getattr(opts, u.field) != getattr(defaults, u.field)]


def ignored(opts: TuneOptions, kinds: Iterable[StudyKind]) -> list[tuple[Use, str]]:
    """The given settings that none of ``kinds`` (one phase) uses, each with the reason."""
    kinds = list(kinds)
    return [
        (u, u.why) for u in given(opts) if not any(u.uses(k, getattr(opts, u.field)) for k in kinds)
    ]


def ignored_line(opts: TuneOptions, kinds: Iterable[StudyKind], phase: str) -> str | None:
    """The one line a phase says about the settings it ignores (None if it uses them all)."""
    out = ignored(opts, kinds)
    if not out:
        return None
    parts = "; ".join(f"{_flag(u, getattr(opts, u.field))} ({why})" for u, why in out)
    return f"{phase}: not used here: {parts}"


def check_used(opts: TuneOptions, phases: Sequence[Sequence[StudyKind]]) -> None:
    """Refuse a given setting that no phase of the run uses (nothing is written yet)."""
    kinds = [k for phase in phases for k in phase]
    out = ignored(opts, kinds)
    if out:
        use, why = out[0]
        names = ", ".join(dict.fromkeys(k.name for k in kinds))
        raise UsageError(
            f"{_flag(use, getattr(opts, use.field))} is used by no study of this run ({names} "
            f"studies: {why}): drop it"
        )


__all__ = ["USES", "Use", "check_used", "given", "ignored", "ignored_line"]
