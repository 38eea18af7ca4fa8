"""A model over all pairs of a federation, measured as ``--strategy federation``'s source of
proposals and not shipped (issue 26 item 2; bench/RESULTS.md, "The federation's model"): one
Gaussian process fitted to the rounds of every settled pair study, over (configuration, pair
descriptor), that guesses where a new pair's best lies before it has run a round.

Why it was tried: the teacher−student accuracy gap predicts where a pair's best temperature lies
(rank correlation +0.80; "What pairs share"), so a model that reads it could place a sibling's
rounds where a copy of its incumbent cannot. Why it is not shipped: fitted even to every other
pair's whole true grid its first guess lies about as far from a left-out pair's best as the
default (bench/federation_model.py), and as the strategy's proposals it spent more rounds than
copying incumbents for a new participant's pairs, the same on the noise model.

What it fits: for each sibling configuration with a finished round that was not pruned, its lead
over its same-student default on the seeds both finished (pp), with that lead's noise (the
siblings' pooled variance of a paired difference per seed, over the seeds averaged) on the
diagonal; the defaults themselves at lead 0. Inputs: log T and α scaled to the study's ranges,
the gap (teacher's accuracy before KD minus the student's, from the study attrs), one-hot
divergence, transfer set and aggregation. Prior mean 0: with no evidence a configuration is the
default's equal; a ``WhiteKernel`` takes what pairs with the same gap do differently. Proposals:
the ``k`` highest posterior-mean leads among a fixed scrambled-Sobol set of (log T, α) per
categorical choice, no two of the same choices within ``SPREAD`` of each other.

Used by bench/federation_model.py (leave one pair out on the truth grids) and the
``federation-model`` arm of bench/search_simulated.py (:func:`proposals` in place of
``tuner.search.federation.proposals``); tests/tuner/test_prior.py checks it.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from tuner.search.federation import FEDERATION_ATTR, default_of
from tuner.search.race import SEED_ATTR, configurations
from tuner.search.space import MULTI_TEACHER, SearchSpace
from tuner.search.warm import Ranked, Sibling, take

#: Candidate (log T, α) points per categorical choice.
CANDIDATES = 256
#: Two proposals of the same categorical choices lie at least this far apart in the unit square of
#: (log T, α): the guesses are not three copies of one point.
SPREAD = 0.15
#: The variance of a lead measured on one seed where no sibling ran a configuration twice (pp²).
NOISE_FALLBACK = 1.0
#: Observations the model is fitted to at most: the defaults, then the leads measured on the most
#: seeds (a fit is cubic in them: 200 take about a second on 2 cores, 700 about 20 s, and the
#: claim that fits waits for it).
MAX_OBSERVATIONS = 300


def gap(attrs: dict[str, Any], position: str) -> float:
    """The pair descriptor: the teacher's accuracy before KD minus the student's (fractions), the
    student being the member at ``position`` of the pair study with ``attrs``."""
    a, b = float(attrs["accuracy_a"]), float(attrs["accuracy_b"])
    return a - b if position == "b" else b - a


@dataclass(frozen=True)
class Encoder:
    """A configuration and its pair's gap as the model's input row, scaled to ``space``."""

    space: SearchSpace

    def row(self, params: dict[str, Any], descriptor: float) -> list[float]:
        lo, hi = (math.log(v) for v in self.space.temperature)
        a_lo, a_hi = self.space.alpha
        t = (math.log(params["temperature"]) - lo) / ((hi - lo) or 1.0)
        alpha = (params["alpha"] - a_lo) / ((a_hi - a_lo) or 1.0)
        # Aggregation means something only with several teachers (tuner.search.space).
        agg = params.get("aggregation") if params.get("transfer_set") in MULTI_TEACHER else None
        return [t, alpha, descriptor,
                *(float(params.get("divergence") == d) for d in self.space.divergence),
                *(float(params.get("transfer_set") == s) for s in self.space.transfer_set),
                *(float(agg == g) for g in self.space.aggregation)]  # fmt: skip


def observations(
    others: Sequence[Sibling], encoder: Encoder
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The siblings' rounds as (inputs, leads over the same-student default in pp, each lead's
    noise variance, how many siblings gave a row): every configuration with a finished round
    that was not pruned, and each default at lead 0."""
    leads: list[tuple[list[float], float, int]] = []  # (row, lead, seeds)
    sq, dof, used = 0.0, 0, 0
    for _name, attrs, trials in others:
        configs = configurations(trials)  # the rounds by configuration; no race verdict needed
        before = len(leads)
        for c in configs:
            d = default_of(configs, c)
            m = min(c.n, d.n) if d is not None else 0
            if c.pruned or m == 0 or d is None:
                continue
            x = encoder.row(c.params, gap(attrs, c.params["position"]))
            if c.is_default:
                leads.append((x, 0.0, 0))
                continue
            diffs = [c.values[j] - d.values[j] for j in range(m)]
            mean = sum(diffs) / m
            leads.append((x, mean, m))
            sq += sum((v - mean) ** 2 for v in diffs)
            dof += m - 1
        used += len(leads) > before
    var = sq / dof if dof else NOISE_FALLBACK
    if len(leads) > MAX_OBSERVATIONS:  # the defaults (m = 0) first, then the most seeds; stable
        leads = sorted(leads, key=lambda r: -r[2] if r[2] else -math.inf)[:MAX_OBSERVATIONS]
    inputs = np.array([x for x, _, _ in leads], dtype=np.float64)
    y = np.array([v for _, v, _ in leads], dtype=np.float64)
    # A default's lead is 0 by definition: only jitter on its diagonal.
    noise = np.array([var / m if m else 1e-6 for _, _, m in leads], dtype=np.float64)
    return inputs, y, noise, used


def fit(inputs: np.ndarray, y: np.ndarray, noise: np.ndarray) -> GaussianProcessRegressor:
    """The GP over the siblings' leads: Matérn 5/2 with a length scale per input, its amplitude
    and a white term (what pairs with the same descriptors do differently) fitted by marginal
    likelihood, the measured noise per lead on the diagonal; deterministic (no random restart)."""
    d = inputs.shape[1]
    kernel = (ConstantKernel(1.0, (1e-3, 1e3))
              * Matern(length_scale=np.full(d, 0.5), length_scale_bounds=(0.05, 20.0), nu=2.5)
              + WhiteKernel(0.1, (1e-4, 1e2)))  # fmt: skip
    gp = GaussianProcessRegressor(kernel, alpha=noise, normalize_y=False, n_restarts_optimizer=0)
    with warnings.catch_warnings():
        # A length scale at its bound means the lead does not vary along that input: an answer,
        # not a fault to print in a worker's log.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gp.fit(inputs, y)


def candidates(space: SearchSpace, n: int = CANDIDATES) -> list[dict[str, Any]]:
    """Configurations of ``space`` to score: ``n`` scrambled-Sobol points in (log T, α), the same
    for every categorical choice and on every machine (a fixed seed)."""
    from scipy.stats import qmc

    unit = qmc.Sobol(2, scramble=True, seed=0).random(n).tolist()  # Python floats: stored as is
    lo, hi = (math.log(v) for v in space.temperature)
    a_lo, a_hi = space.alpha
    choices = []
    for div, ts, pos in itertools.product(space.divergence, space.transfer_set, space.position):
        aggs = space.aggregation if ts in MULTI_TEACHER else (None,)
        for agg in aggs:
            choice = {"divergence": div, "transfer_set": ts, "position": pos}
            if agg is not None:
                choice["aggregation"] = agg
            choices.append(choice)
    return [{"temperature": math.exp(lo + u * (hi - lo)), "alpha": a_lo + v * (a_hi - a_lo), **c}
            for c in choices for u, v in unit]  # fmt: skip


def _choices(params: dict[str, Any]) -> tuple:
    """A configuration's categorical choices (all but T and α)."""
    return tuple(sorted((k, v) for k, v in params.items() if k not in ("temperature", "alpha")))


@dataclass(frozen=True)
class Guess:
    """One configuration the model proposes, with its predicted lead over the default (pp)."""

    params: dict[str, Any]
    lead: float


def guesses(
    own: dict[str, Any], space: SearchSpace, others: Sequence[Sibling], k: int
) -> tuple[list[Guess], int]:
    """The model's ``k`` best guesses for the pair study with attrs ``own``, best first, and how
    many sibling studies it read (no guess when none had a finished round)."""
    encoder = Encoder(space)
    inputs, y, noise, used = observations(others, encoder)
    if k <= 0 or not len(y) or not np.any(y):
        return [], used
    gp = fit(inputs, y, noise)
    pool = candidates(space)
    rows = np.array([encoder.row(p, gap(own, p["position"])) for p in pool], dtype=np.float64)
    mean = gp.predict(rows)
    picked: list[int] = []
    for i in np.argsort(-mean, kind="stable"):
        same = [j for j in picked if _choices(pool[j]) == _choices(pool[i])]
        if all(math.dist(rows[i][:2], rows[j][:2]) >= SPREAD for j in same):
            picked.append(int(i))
        if len(picked) == k:
            break
    return [Guess(pool[i], float(mean[i])) for i in picked], used


def proposals(
    own: dict[str, Any],
    own_trials: Sequence[FrozenTrial],
    space: SearchSpace,
    others: Sequence[Sibling],
    k: int = 3,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """What ``tuner.search.federation.proposals`` returns, from the model: up to ``k`` (params,
    user attrs) for the study with attrs ``own``, the highest predicted lead first, those already
    tried there skipped."""
    found, used = guesses(own, space, others, k)
    ranked: list[Ranked] = [(-g.lead, "model", i + 1, g.params) for i, g in enumerate(found)]
    source = f"the model of {used} pair{'' if used == 1 else 's'}"
    return take(ranked, own_trials, space, k,
                lambda _name, rank: {FEDERATION_ATTR: f"{source}, guess {rank}", SEED_ATTR: 0,
                                     "attempt": 1})  # fmt: skip


__all__ = ["CANDIDATES", "MAX_OBSERVATIONS", "SPREAD", "Encoder", "Guess", "candidates", "fit",
           "gap", "guesses", "observations", "proposals"]  # fmt: skip
