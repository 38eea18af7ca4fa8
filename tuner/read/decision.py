"""The statistics of a pair's answer (docs/design.md §4, §9): the paired test a tuned
configuration must pass against its same-student default, its confidence interval, and how the
test level is split over the looks of a sequential confirmation (the looks themselves are the
strategy's: tuner.strategies)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

#: Level of the one-sided paired test a recommendation must pass to differ from the default
#: (the whole error budget: a sequential confirmation splits it over its two looks).
LEVEL = 0.05
#: The first look's share of LEVEL; the last look tests at LEVEL − FIRST_LEVEL, so the chance of
#: a false claim over both looks stays below LEVEL (Bonferroni over the looks: no assumption on
#: how the two tests correlate). Small, so that the last look keeps most of the power: the first
#: look only ends the clear cases (bench/search_simulated.py).
FIRST_LEVEL = 0.01


def look_levels(n_looks: int, level: float = LEVEL) -> list[float]:
    """Each look's test level: the whole ``level`` for one look, else FIRST_LEVEL then the rest."""
    return [level] if n_looks == 1 else [FIRST_LEVEL, level - FIRST_LEVEL]


def verdict(
    candidate: Sequence[float],
    default: Sequence[float],
    min_gain: float,
    level: float,
    last: bool,
) -> tuple[bool | None, float]:
    """A look's decision on a tuned candidate against its default over the same seeds: True
    (recommend it: :func:`decide` passes at this look's ``level``), False (keep the default: the
    last look, or the candidate's mean is below the default's, where more seeds would only be
    spent to confirm a loss — stopping then never adds a false claim), None (run the next look).
    Returns (verdict, p-value)."""
    recommended, p = decide(candidate, default, min_gain, level)
    if recommended:
        return True, p
    behind = statistics.fmean(candidate) < statistics.fmean(default)
    return (False if last or behind else None), p


def decide(
    candidate: Sequence[float],
    default: Sequence[float],
    min_gain: float,
    level: float = LEVEL,
) -> tuple[bool, float]:
    """The one rule a tuned configuration is recommended by: its mean gain over the default on
    the same fresh seeds is at least ``min_gain`` pp and a one-sided paired t-test puts it above
    the default at ``level``. Returns (recommended, p-value)."""
    p = paired_p_value(candidate, default)
    difference = statistics.fmean(candidate) - statistics.fmean(default)
    return p < level and difference >= min_gain, p


def paired_p_value(candidate: Sequence[float], default: Sequence[float]) -> float:
    """One-sided paired t-test that the candidate's gain exceeds the default's over the same
    seeds (same seed, same batch order: the pairing removes the seed's share of the noise)."""
    from scipy import stats  # ~0.6 s of import: only where a recommendation is computed

    diff = [c - d for c, d in zip(candidate, default, strict=True)]
    if len(set(diff)) == 1:  # no spread: the test is undefined; only a sure gain passes
        return 0.0 if diff[0] > 0 else 1.0
    return float(stats.ttest_rel(candidate, default, alternative="greater").pvalue)


def difference_ci(
    candidate: Sequence[float], default: Sequence[float], level: float = LEVEL
) -> tuple[float, float]:
    """The two-sided (1 − 2·level) confidence interval of the mean paired difference: its lower
    end is the one-sided test's bound (above 0 exactly when p < level)."""
    from scipy import stats

    diff = [c - d for c, d in zip(candidate, default, strict=True)]
    mean = statistics.fmean(diff)
    if len(diff) < 2 or len(set(diff)) == 1:
        return mean, mean
    half = float(stats.t.ppf(1 - level, len(diff) - 1)) * statistics.stdev(diff) / len(diff) ** 0.5
    return mean - half, mean + half
