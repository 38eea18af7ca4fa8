"""The search strategies compared on many sampler seeds: the race against today's fixed
pipeline, driven by dkd-tune's own code (its samplers, race rule, candidates and decision rule)
on a noise model of the real KD rounds.

Why a model: the goals (false claims at most 5 % of at least 40 claims, power over pairs that
truly gain) need hundreds of pair runs per arm; at about 1.5 s per real round on 2 cores the
`--trials 100` arm alone would take days. The model is fitted to real rounds: per pair of
``bench/search_efficiency.py``'s grid (7 T × 6 α cells and the default, each at the 5 truth
seeds, `bench/results/search_truth.json`),

    gain(T, α, seed j) = μ(T, α) + s_j + e,

μ the true gain (the cell means, bilinear between cells in log2 T and α; the default's own mean at
T = 1, α = 0.5), s_j the seed's share (shared by every configuration run at seed j: what pairing
removes), e the rest (independent per configuration and seed); the standard deviations of s and e
are the pair's two-way decomposition of its grid. What a configuration truly gains is μ; the
grid's best is the best cell's μ. Pruning is off in every arm (the model has no curve inside the
round): rounds are counted whole.

Arms (per pair and sampler seed, divergence kl, transfer set public, T ∈ [0.25, 16], α ∈ [0, 1]):

* ``fixed-N``: today's pipeline — the defaults enqueued, N TPE trials at one fresh seed each
  (``make_sampler('tpe')``), then ``tuner.run.confirm.candidates`` (3 best + default) on 3
  fresh seeds and ``tuner.read.results.decide`` at p < 0.05 (min gain 0, today's rule);
* ``race``: ``PairKind.before_claim`` (the race's enqueued rounds and stop) with the race's
  sampler (``make_sampler(race=True)``), cap 200, then ``race_candidates`` on up to
  ``--confirm`` fresh seeds, look by look, decided with ``--min-gain`` (tuner.read.decision);
  ``race-tpe``: multivariate TPE instead of the GP; ``race-1look``: one look at 6 fresh seeds
  (the race's confirmation before it was sequential).

* ``federation``: ``--strategy federation`` — the race, each pair first trying the incumbents
  of the pairs that already settled (``PairKind.share`` at the claim of its first trial), the
  lower floor where they hold. The 11 pairs are one federation in one in-memory storage per
  sampler seed, raced **one at a time** in an order drawn per sampler seed (the k-th pair sees
  k − 1 settled siblings; in lockstep there is nothing to share), each confirmed as the race is.
  ``federation-K-F-P``: the same with K proposals, a floor of F proposals and patience P where
  they hold (``federation-K-12-6``: the proposals alone, the race's stop).
  A sibling's configuration is carried by the student's role, from the participants' accuracies
  (``ACCURACY``); in the bench's space (the student at position a) a configuration from a pair
  whose student has the other role does not fit and is skipped. ``federation-model[-K-F-P]``:
  the proposals are the guesses of the model over all pairs' rounds of bench/federation_prior.py
  (it reads each pair's teacher−student accuracy gap from ``ACCURACY``). Each row records the
  true gain of every proposal it took (``guesses_true``): how good the guesses were, apart from
  the race's noise.

With a race arm, the confirmation rules of ``RULES`` (one look at 4, 6 or 8 fresh seeds, two
looks at other seeds and levels) are applied to the same race runs, on the same fresh seeds:
their rounds, claims and power, beside what dkd-tune's own rule gave.

Run: ``.venv/bin/python bench/search_simulated.py`` (prints the table of bench/RESULTS.md and
writes ``bench/results/search_simulated.json``); the federation against the race:
``.venv/bin/python bench/search_simulated.py --sampler-seeds 12 --arms
race,federation,federation-3-8-4 --out bench/results/search_simulated_federation.json``.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import hashlib
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import federation_prior
import optuna
from search_efficiency import DEFAULT, GRID_ALPHA, GRID_T, HERE, NARROW, TRUTH_SEED_BASE, TruthCache
from search_efficiency import parse_pairs as parse_pair_list

from objectives import load_config
from tuner.kinds import KINDS, Task
from tuner.read.decision import LEVEL, decide, look_levels, verdict
from tuner.search import federation, race
from tuner.search.federation import FEDERATION_ATTR
from tuner.search.race import SEED_ATTR
from tuner.search.sampler import make_sampler
from tuner.search.space import parse_space
from tuner.strategies import STRATEGIES
from tuner.strategies.federation import FederationStrategy

PAIRS = "0-1,2-5,3-7,4-6,6-8,4-5,0-9,1-2,2-7"
#: Pairs whose null copy is added: their noise, no configuration better than the default (the
#: federation has one pair whose grid's best is within 0.5 pp of its default, 0 <- 1; 16 screened).
NULL_PAIRS = "4-6,6-8"
#: The race-1look arm's fresh seeds: the race's confirmation before it was sequential.
ONE_LOOK_SEEDS = 6
#: Each participant's accuracy before KD (%): the bundle's meta.json of the federation whose
#: rounds the truth cache holds (fashion-mnist-n10, 86cc71623b5df4df). The federation arm's
#: studies record them, as PairKind.record does: they give each student's role.
ACCURACY = {0: 72.92, 1: 77.24, 2: 66.72, 3: 56.33, 4: 57.4, 5: 63.54, 6: 40.25, 7: 74.2,
            8: 73.44, 9: 74.12}  # fmt: skip


@dataclasses.dataclass
class Landscape:
    """One pair's noise model (see the module docstring)."""

    pair: tuple[int, int]
    means: dict[tuple[float, float], float]  # grid cells and the default: true gain
    seed_sd: float
    rest_sd: float
    null: bool = False  # every configuration gains what the default does

    @property
    def name(self) -> str:
        return f"{self.pair[0]}<-{self.pair[1]}" + (" null" if self.null else "")

    def truth(self, t: float, alpha: float) -> float:
        if (t, alpha) == DEFAULT or self.null:
            return self.means[DEFAULT]
        x = min(max(math.log2(t), math.log2(GRID_T[0])), math.log2(GRID_T[-1]))
        lx = [math.log2(v) for v in GRID_T]
        i = min(max(bisect.bisect_right(lx, x) - 1, 0), len(lx) - 2)
        j = min(max(bisect.bisect_right(GRID_ALPHA, alpha) - 1, 0), len(GRID_ALPHA) - 2)
        u = (x - lx[i]) / (lx[i + 1] - lx[i])
        v = (alpha - GRID_ALPHA[j]) / (GRID_ALPHA[j + 1] - GRID_ALPHA[j])
        m = self.means
        return (
            (1 - u) * (1 - v) * m[(GRID_T[i], GRID_ALPHA[j])]
            + u * (1 - v) * m[(GRID_T[i + 1], GRID_ALPHA[j])]
            + (1 - u) * v * m[(GRID_T[i], GRID_ALPHA[j + 1])]
            + u * v * m[(GRID_T[i + 1], GRID_ALPHA[j + 1])]
        )

    @property
    def best(self) -> float:
        if self.null:
            return self.means[DEFAULT]
        return max(v for c, v in self.means.items() if c != DEFAULT)


def fit(cache: TruthCache, pair: tuple[int, int], seeds: list[int]) -> Landscape:
    """The pair's model from its grid's real rounds."""
    cells = [(t, a) for t in GRID_T for a in GRID_ALPHA] + [DEFAULT]
    runs = {c: cache.truth(*pair, *c, seeds) for c in cells}
    means = {c: statistics.fmean(v) for c, v in runs.items()}
    seed_means = [statistics.fmean(runs[c][k] for c in cells) for k in range(len(seeds))]
    grand = statistics.fmean(seed_means)
    resid = [
        runs[c][k] - means[c] - seed_means[k] + grand for c in cells for k in range(len(seeds))
    ]
    rest = math.sqrt(sum(r * r for r in resid) / ((len(cells) - 1) * (len(seeds) - 1)))
    # The seed means' spread holds the residuals' share too (rest² / cells): removed.
    seed = math.sqrt(max(statistics.variance(seed_means) - rest**2 / len(cells), 0.0))
    return Landscape(pair, means, seed, rest)


class Rounds:
    """Simulated KD rounds of one pair run: the seed shares s_j per seed key, e per
    (configuration, seed key) — a repeated round repeats its value, as a real one does."""

    def __init__(self, land: Landscape, salt: str) -> None:
        self.land, self.salt = land, salt
        self.count = 0

    def _normal(self, *key: Any) -> float:
        digest = hashlib.sha256(repr((self.salt, *key)).encode()).digest()
        return random.Random(digest).gauss(0.0, 1.0)

    def gain(self, params: dict[str, Any], seed: Any, count: bool = True) -> float:
        """A round's gain (``count``: it is spent; False for the confirmation rules' seeds)."""
        self.count += count
        t, a = params["temperature"], params["alpha"]
        config = (round(t, 12), round(a, 12))
        return (
            self.land.truth(t, a)
            + self.land.seed_sd * self._normal("seed", seed)
            + self.land.rest_sd * self._normal("rest", config, seed)
        )


def _study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=sampler)


def _confirm(
    rounds: Rounds, chosen: list, seeds: int, min_gain: float, sequential: bool
) -> dict[str, Any]:
    """Run the candidates at fresh seeds (shared: paired), look by look, and apply dkd-tune's
    decision rule (tuner.read.decision, as tuner.read.results.recommendation applies it)."""
    default = next(t for t in chosen if "default" in t.user_attrs)
    planned = STRATEGIES["race" if sequential else "fixed"].looks(seeds)
    gains: dict[int, list[float]] = {t.number: [] for t in chosen}
    for i, (n, level) in enumerate(zip(planned, look_levels(len(planned)), strict=True)):
        for t in chosen:
            gains[t.number] += [
                rounds.gain(t.params, ("fresh", k)) for k in range(i and planned[i - 1], n)
            ]
        best = max(chosen, key=lambda t: (statistics.fmean(gains[t.number]), -t.number))
        if best is default:
            claim = False
            break
        claim, _ = verdict(gains[best.number], gains[default.number], min_gain, level,
                           i == len(planned) - 1)  # fmt: skip
        if claim is not None:
            break
    pick = best if claim else default
    return {"claim": claim, "T": pick.params["temperature"], "alpha": pick.params["alpha"],
            "confirm_seeds": n}  # fmt: skip


def run_fixed(rounds: Rounds, space, seed: int, trials: int, confirm: int) -> dict[str, Any]:
    study = _study(make_sampler("tpe", space, seed))
    for params in space.defaults():
        study.enqueue_trial(params, user_attrs={"default": params["position"]})
    for n in range(trials):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, rounds.gain(params, ("fixed", n)))
    search = rounds.count
    chosen = STRATEGIES["fixed"].candidates(study.trials)
    out = _confirm(rounds, chosen, confirm, 0.0, sequential=False)
    return {**out, "search_rounds": search, "rounds": rounds.count}


def _race(study: optuna.Study, rounds: Rounds, space, task: Task) -> None:
    """A pair study's search as a worker runs it: the strategy's step before each claim
    (enqueue, or stop), the claim, what the claim takes from the federation, the round."""
    for params in space.defaults():
        study.enqueue_trial(params, user_attrs={"default": params["position"], SEED_ATTR: 0})
    kind = KINDS["pair"]
    while kind.before_claim(study, task) is None:  # the product's own step: enqueue, or stop
        trial = study.ask()
        kind.share(study, task, trial.number)  # as tuner.worker.lifecycle claims
        params = space.suggest(trial)
        index = int(trial.user_attrs.get(SEED_ATTR, 0))
        trial.set_user_attr(SEED_ATTR, index)
        study.tell(trial, rounds.gain(params, ("race", index)))


def run_race(
    rounds: Rounds,
    space,
    seed: int,
    cap: int,
    confirm: int,
    min_gain: float,
    sampler: str,
    sequential: bool = True,
) -> dict[str, Any]:
    study = _study(make_sampler(sampler, space, seed, race=True))
    task = Task("sim", "pair", (0, 1), load_config("fashion-mnist"), space, cap, strategy="race")
    _race(study, rounds, space, task)
    return _raced(study, rounds, cap, confirm, min_gain, sequential, "race")


def _raced(
    study: optuna.Study,
    rounds: Rounds,
    cap: int,
    confirm: int,
    min_gain: float,
    sequential: bool,
    name: str,
) -> dict[str, Any]:
    """A raced pair's confirmation and row (``name``: its strategy)."""
    state = race.race_state(study.trials)
    search = rounds.count
    chosen = STRATEGIES[name].candidates(study.trials)
    out = _confirm(rounds, chosen, confirm, min_gain, sequential)
    # The same fresh seeds for the confirmation rules compared in `rules` (not spent: the arm's
    # own confirmation above is what its rounds count).
    fresh = [[rounds.gain(t.params, ("fresh", k), count=False) for k in range(RULE_SEEDS)]
             for t in chosen]  # fmt: skip
    shared = sorted((c for c in state.configs if FEDERATION_ATTR in c.first.user_attrs),
                    key=lambda c: c.first.number)  # fmt: skip
    return {**out, "search_rounds": search, "rounds": rounds.count,
            "stopped": STRATEGIES[name].summary(study.trials, cap)["stopped"],
            "incumbent_seeds": state.incumbent.n,
            "configurations": len(state.configs),
            "fresh": fresh if len(chosen) == 2 else None,
            "incumbent_true": _true(rounds.land, chosen[0].params),
            "from_federation": len(shared),
            # What the federation guessed, judged by the truth: each proposal's true gain.
            "guesses_true": [_true(rounds.land, c.params) for c in shared],
            "incumbent_from_federation": FEDERATION_ATTR in state.incumbent.first.user_attrs,
            "held": federation.held(state)}  # fmt: skip


def run_federation(
    lands: dict[str, Landscape],
    space,
    seed: int,
    cap: int,
    confirm: int,
    min_gain: float,
) -> list[dict[str, Any]]:
    """One federation run: every pair a study of ``--strategy federation`` in one storage,
    raced one at a time in an order drawn from ``seed``, each confirmed once it settled."""
    storage = optuna.storages.InMemoryStorage()
    config = load_config("fashion-mnist")
    order = random.Random(f"order|{seed}").sample(list(lands), len(lands))
    rows = []
    for k, p in enumerate(order):
        land = lands[p]
        a, b = land.pair
        study = optuna.create_study(storage=storage, study_name=f"sim/{p}", direction="maximize",
                                    sampler=make_sampler("gp", space, seed, race=True))  # fmt: skip
        attrs = {"mode": "pair", "strategy": "federation", "pair": [a, b], "federation": "sim",
                 "federation_hash": "sim", "accuracy_a": ACCURACY[a] / 100,
                 "accuracy_b": ACCURACY[b] / 100}  # fmt: skip
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        rounds = Rounds(land, f"{p}|{seed}")  # the race arm's noise
        task = Task(f"sim/{p}", "pair", (a, b), config, space, cap, strategy="federation")
        _race(study, rounds, space, task)
        row = _raced(study, rounds, cap, confirm, min_gain, True, "federation")
        rows.append({"pair": p, "order": k, **row})
    return rows


def _true(land: Landscape, params: dict[str, Any]) -> float:
    return land.truth(params["temperature"], params["alpha"])


#: Confirmation rules compared on each race run's incumbent and default (name: looks, each
#: look's level, and the lead over the default below which a non-last look stops for the
#: default; dkd-tune's is 0: the candidate behind).
RULES = {
    "one look, 4 seeds": ([4], [0.05], 0.0),
    "one look, 6 seeds (before 2026-12-05)": ([6], [0.05], 0.0),
    "one look, 8 seeds": ([8], [0.05], 0.0),
    "3 then 6 seeds, 0.01 + 0.04": ([3, 6], [0.01, 0.04], 0.0),
    "3 then 8 seeds, 0.01 + 0.04 (dkd-tune)": ([3, 8], [0.01, 0.04], 0.0),
    "3 then 8 seeds, 0.02 + 0.03": ([3, 8], [0.02, 0.03], 0.0),
    "3 then 8 seeds, 0.01 + 0.04, stop below a 0.5 pp lead": ([3, 8], [0.01, 0.04], 0.5),
    "4 then 8 seeds, 0.01 + 0.04": ([4, 8], [0.01, 0.04], 0.0),
}
RULE_SEEDS = max(planned[-1] for planned, _, _ in RULES.values())


def apply_rule(row: dict[str, Any], rule: tuple, min_gain: float) -> tuple[bool, int]:
    """A confirmation rule on a race run's stored fresh seeds: (claim, confirmation rounds)."""
    planned, levels, stop_below = rule
    if row["fresh"] is None:  # the default led the race: its first look measures it
        return False, planned[0]
    candidate, default = row["fresh"]
    for i, (n, level) in enumerate(zip(planned, levels, strict=True)):
        c, d = candidate[:n], default[:n]
        if decide(c, d, min_gain, level)[0]:
            return True, 2 * n
        if i == len(planned) - 1 or statistics.fmean(c) - statistics.fmean(d) < stop_below:
            return False, 2 * n
    raise AssertionError("the last look decides")


def rules(rows: list[dict], min_gain: float) -> dict[str, dict]:
    """Every confirmation rule of RULES on the race arm's runs: rounds, claims, power."""
    mine = [r for r in rows if r["arm"] == "race"]
    out = {}
    for name, rule in RULES.items():
        applied = [(r, *apply_rule(r, rule, min_gain)) for r in mine]
        total = [r["search_rounds"] + n for r, _, n in applied]
        claims = [r for r, claim, _ in applied if claim]
        strong = [(r, c) for r, c, _ in applied if r["grid_best"] - r["default_true"] >= 1.0]
        out[name] = {
            "rounds_median": statistics.median(total),
            "rounds_mean": statistics.fmean(total),
            "claims": len(claims),
            "false_claims": sum(r["incumbent_true"] <= r["default_true"] for r in claims),
            "power": sum(c for _, c in strong) / max(len(strong), 1),
        }
        x = out[name]
        print(f"{name:>56}: rounds median {x['rounds_median']:.0f} (mean {x['rounds_mean']:.1f}), "
              f"claims {x['claims']}, false {x['false_claims']}, power "
              f"{100 * x['power']:.1f} %")  # fmt: skip
    return out


def summarise(rows: list[dict], lands: dict) -> dict[str, dict]:
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        claims = [r for r in mine if r["claim"]]
        false = [r for r in claims if r["true"] <= r["default_true"]]
        strong = [r for r in mine if r["grid_best"] - r["default_true"] >= 1.0]
        nulls = [r for r in mine if r["pair"].endswith("null")]
        power = sum(r["claim"] for r in strong) / max(len(strong), 1)
        out[arm] = {
            "runs": len(mine),
            "rounds_median": statistics.median(r["rounds"] for r in mine),
            "rounds_mean": statistics.fmean(r["rounds"] for r in mine),
            "gap_median": statistics.median(r["grid_best"] - r["true"] for r in mine),
            "within_0_5": sum(r["grid_best"] - r["true"] <= 0.5 for r in mine),
            "claims": len(claims),
            "false_claims": len(false),
            "power": power,
            "strong_runs": len(strong),
            "null_runs": len(nulls),
            "null_claims": sum(r["claim"] for r in nulls),
        }
        s = out[arm]
        if arm.startswith("federation"):
            s["from_federation_median"] = statistics.median(r["from_federation"] for r in mine)
            s["incumbent_from_federation"] = sum(r["incumbent_from_federation"] for r in mine)
            s["held"] = sum(r["held"] for r in mine)
            guessed = [r for r in mine if r["guesses_true"]]
            s["guessed_runs"] = len(guessed)
            s["guess1_gap_median"] = statistics.median(
                r["grid_best"] - r["guesses_true"][0] for r in guessed) if guessed else None
            s["best_guess_gap_median"] = statistics.median(
                r["grid_best"] - max(r["guesses_true"]) for r in guessed) if guessed else None
            s["best_guess_beats_default"] = sum(
                max(r["guesses_true"]) > r["default_true"] for r in guessed)
            if guessed:
                print(f"{arm:>22}: {len(guessed)} runs took proposals; the first one's true gain "
                      f"{s['guess1_gap_median']:.2f} pp below the grid's best (median), the best "
                      f"of them {s['best_guess_gap_median']:.2f} pp; the best beat the default "
                      f"in {s['best_guess_beats_default']}")
            late = [r for r in mine if r["order"] >= len(lands) // 2]
            s["late_runs"] = len(late)
            s["late_rounds_median"] = statistics.median(r["rounds"] for r in late)
            s["late_gap_median"] = statistics.median(r["grid_best"] - r["true"] for r in late)
            print(
                f"{arm:>22}: proposals from the federation median {s['from_federation_median']:.0f}"
                f"; incumbent from the federation in {s['incumbent_from_federation']} runs; held "
                f"(the lower floor) in {s['held']}; the later half of the order "
                f"({len(late)} runs): rounds median {s['late_rounds_median']:.0f}, gap "
                f"{s['late_gap_median']:.2f} pp"
            )
        if arm.startswith(("race", "federation")):
            s["search_rounds_median"] = statistics.median(r["search_rounds"] for r in mine)
            s["configurations_median"] = statistics.median(r["configurations"] for r in mine)
            s["incumbent_seeds_median"] = statistics.median(r["incumbent_seeds"] for r in mine)
            s["at_cap"] = sum(r["stopped"] == "cap" for r in mine)
            print(
                f"{arm:>22}: search rounds median {s['search_rounds_median']:.0f}, "
                f"configurations {s['configurations_median']:.0f}, incumbent seeds "
                f"{s['incumbent_seeds_median']:.0f}, {s['at_cap']} at the cap"
            )
        print(
            f"{arm:>22}: {s['runs']} pair runs; rounds median {s['rounds_median']:.0f} (mean "
            f"{s['rounds_mean']:.1f}); below the grid's best median {s['gap_median']:.2f} pp "
            f"(within 0.5 pp {s['within_0_5']}/{s['runs']}); claims {s['claims']}, false "
            f"{s['false_claims']} ({100 * len(false) / max(len(claims), 1):.1f} %); power "
            f"{100 * power:.0f} % of {s['strong_runs']} runs on pairs whose grid's best gains "
            f"≥ 1 pp; on the null copies {s['null_claims']} claims in {s['null_runs']} runs",
            flush=True,
        )
    return out


def landscapes(
    pairs: list[tuple[int, int]], truth_seeds: int = 5, cache: Path = HERE / "results" /
    "search_truth.json"
) -> tuple[Any, list[Landscape]]:
    """The bench's search space (the default federation, T and α searched) and each pair's
    noise model fitted to its grid's rounds at the first ``truth_seeds`` truth seeds."""
    config = load_config("fashion-mnist", [f"{item}" for item in NARROW])
    truth = TruthCache(
        cache, {"federation": config.federation_hash, "kd": dataclasses.asdict(config.kd)}
    )
    seeds = [TRUTH_SEED_BASE + i for i in range(truth_seeds)]
    return parse_space(config.search, "bench"), [fit(truth, p, seeds) for p in pairs]


def federation_arm(arm: str, lands: dict, space, args: argparse.Namespace) -> list[dict]:
    """The rows of a ``federation[-model][-K-F-P]`` arm, one federation run per sampler seed (the
    strategy's constants set for the arm, then restored; ``-model``: the proposals of the model
    of bench/federation_prior.py in place of the settled pairs' incumbents)."""
    saved = federation.PROPOSALS, federation.FLOOR, federation.PATIENCE
    shared = FederationStrategy.shared
    numbers = [int(x) for x in arm.split("-")[1:] if x != "model"]
    if numbers:
        federation.PROPOSALS, federation.FLOOR, federation.PATIENCE = numbers
    if "-model" in arm:
        FederationStrategy.shared = lambda self, own, trials, space, siblings: tuple(
            federation_prior.proposals(own, trials, space, siblings, federation.PROPOSALS))
    rows = []
    try:
        for seed in range(args.first_seed, args.first_seed + args.sampler_seeds):
            for r in run_federation(lands, space, seed, args.cap, args.race_confirm,
                                    args.min_gain):  # fmt: skip
                land = lands[r["pair"]]
                truth = {"true": land.truth(r["T"], r["alpha"]),
                         "default_true": land.means[DEFAULT], "grid_best": land.best}  # fmt: skip
                rows.append({"arm": arm, "sampler_seed": seed, **r, **truth})
    finally:
        federation.PROPOSALS, federation.FLOOR, federation.PATIENCE = saved
        FederationStrategy.shared = shared
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=parse_pair_list, default=parse_pair_list(PAIRS))
    parser.add_argument("--null-pairs", type=parse_pair_list, default=parse_pair_list(NULL_PAIRS))
    parser.add_argument("--sampler-seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="sampler seeds first-seed, first-seed + 1, … (the noise follows "
                        "them: another first seed is another draw)")  # fmt: skip
    parser.add_argument(
        "--arms",
        default="fixed-100,fixed-30,race,race-tpe",
        help="fixed-N, race (the GP sampler), race-tpe, race-1look (one look at 6 fresh "
        "seeds: the confirmation before the sequential one), federation, federation-K-F-P "
        "(K proposals, floor F, patience P where they hold)",
    )
    parser.add_argument("--cap", type=int, default=200, help="the race's --trials")
    parser.add_argument("--race-confirm", type=int, default=STRATEGIES["race"].confirm)
    parser.add_argument("--min-gain", type=float, default=0.5)
    parser.add_argument("--patience", type=int, default=race.PATIENCE)
    parser.add_argument("--max-seeds", type=int, default=race.MAX_SEEDS)
    parser.add_argument("--min-configurations", type=int, default=race.MIN_CONFIGURATIONS)
    parser.add_argument("--truth-seeds", type=int, default=5)
    parser.add_argument("--cache", default=str(HERE / "results" / "search_truth.json"))
    parser.add_argument("--out", default=str(HERE / "results" / "search_simulated.json"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    race.PATIENCE = args.patience  # the race reads both when it decides
    race.MAX_SEEDS = args.max_seeds
    race.MIN_CONFIGURATIONS = args.min_configurations
    space, fitted = landscapes(args.pairs + args.null_pairs, args.truth_seeds, Path(args.cache))
    lands = {land.name: land for land in fitted[: len(args.pairs)]}
    for land in fitted[len(args.pairs) :]:  # the null copies
        null = dataclasses.replace(land, null=True)
        lands[null.name] = null
    for p, land in lands.items():
        print(
            f"{p}: grid best {land.best:+.2f}, default {land.means[DEFAULT]:+.2f}; "
            f"seed share sd {land.seed_sd:.2f}, rest sd {land.rest_sd:.2f} pp"
        )
    rows = []
    started = time.perf_counter()
    for arm in args.arms.split(","):
        if arm.startswith("federation"):
            rows += federation_arm(arm, lands, space, args)
            print(f"  {arm} done ({time.perf_counter() - started:.0f} s)", flush=True)
            continue
        for p, land in lands.items():
            for seed in range(args.first_seed, args.first_seed + args.sampler_seeds):
                rounds = Rounds(land, f"{p}|{seed}")  # the same noise for every arm
                if arm.startswith("race"):  # race (GP, the default), race-tpe, race-1look
                    variant = arm.split("-")[1:]
                    sampler = "tpe" if "tpe" in variant else "gp"
                    once = "1look" in variant
                    seeds = ONE_LOOK_SEEDS if once else args.race_confirm
                    r = run_race(rounds, space, seed, args.cap, seeds, args.min_gain, sampler,
                                 sequential=not once)  # fmt: skip
                else:
                    r = run_fixed(rounds, space, seed, int(arm.split("-")[1]), 3)
                truth = {"true": land.truth(r["T"], r["alpha"]),
                         "default_true": land.means[DEFAULT], "grid_best": land.best}  # fmt: skip
                rows.append({"arm": arm, "pair": p, "sampler_seed": seed, **r, **truth})
        print(f"  {arm} done ({time.perf_counter() - started:.0f} s)", flush=True)
    table = summarise(rows, lands)
    compared = rules(rows, args.min_gain) if "race" in args.arms.split(",") else {}
    Path(args.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "args": {k: str(v) for k, v in vars(args).items()},
                "level": LEVEL,
                "landscapes": {
                    p: {
                        "seed_sd": x.seed_sd,
                        "rest_sd": x.rest_sd,
                        "best": x.best,
                        "default": x.means[DEFAULT],
                    }
                    for p, x in lands.items()
                },
                "summary": table,
                "rules": compared,
                "rows": rows,
            },
            indent=1,
            default=str,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
