"""Search efficiency on fresh seeds: does dkd-tune's recommendation hold up against the
exhaustive T × α grid, and how often does it claim a gain that is not there?

A configuration's *true gain* is its mean gain over ``--truth-seeds`` trial seeds that no search
and no confirmation uses (from ``TRUTH_SEED_BASE``). Per pair (student ← teacher, divergence
``kl``, transfer set ``public``, T and α searched):

1. the grid: every (T, α) of 7 temperatures × 6 α at every truth seed; its best cell by true gain
   is the target; the default (T = 1, α = 0.5, off the grid) is measured the same way;
2. the search: the real pipeline (a subprocess on its own SQLite file, the space narrowed with
   ``--set search.…``), once per sampler seed and arm: ``race`` is dkd-tune's default
   (``--strategy race --trials 200``: the race, its GP sampler, 6 fresh seeds for the answer,
   ``--min-gain 0.5``); ``fixed-N`` the fixed pipeline as it was before the race
   (``--strategy fixed --trials N --confirm 3 --sampler tpe --min-gain 0``); ``warm-N`` the same
   with ``--warm-start on``;
3. what a user takes home, read from that storage: the recommendation (``tuner.read.results``;
   at the shipped level and at a Bonferroni level over the candidates) and, for comparison, the
   single best trial (what ``export`` gave before confirmation). Their true gains are measured like
   the grid's.

Reported: the recommended configuration's distance to the grid's best cell (median over pairs and
sampler seeds, and the share within 0.5 pp), the compute spent (search trials, pruned ones by the
share of the round they ran, plus confirmation runs) against the grid's trials, and the false
claims: of the pairs whose take-home configuration claims to beat the default, the share whose
true gains say it does not. True gains are cached in ``--cache`` (JSON), so a rerun computes only
what is missing; the search storages in ``--runs`` are resumed by the rerun's own ``dkd-tune``.
Run from the repository root: ``.venv/bin/python bench/search_efficiency.py`` (about 90 min on 2
idle CPU cores; most of it is the grid's 42 × 5 runs per pair).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from objectives import load_config, prepare_federation, run_trial
from tuner.read.decision import LEVEL, paired_p_value
from tuner.read.results import pair_studies, recommendations
from tuner.search.best import best_trial
from tuner.search.race import race_state
from tuner.store.db import open_storage
from tuner.store.records import budget_of, is_default

GRID_T = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
GRID_ALPHA = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT = (1.0, 0.5)
#: Truth seeds start here: far from the search's (seed · 1,000,003 + trial number) and the
#: confirmation's (tuner.run.confirm.CONFIRM_SEED_BASE = 2,000,000,011 onwards).
TRUTH_SEED_BASE = 1_500_000_001
HERE = Path(__file__).resolve().parent
#: The search space every search run gets: the grid's (one student, kl, public, T up to 16).
NARROW = (
    'search.position=["a"]',
    'search.divergence=["kl"]',
    'search.transfer_set=["public"]',
    "search.temperature=[0.25, 16.0]",
)

_BUNDLE: Any = None
_RECIPE: Any = None


def _init_worker(config: str) -> None:
    """A truth process: one thread (the processes share the cores), the bundle loaded once."""
    global _BUNDLE, _RECIPE
    torch.set_num_threads(1)
    study = load_config(config)
    _BUNDLE, _RECIPE = prepare_federation(study), study.kd


def _gain(job: tuple[int, int, float, float, int]) -> float:
    student, teacher, t, alpha, seed = job
    return run_trial(
        _BUNDLE, student, [teacher], temperature=t, alpha=alpha, seed=seed, recipe=_RECIPE
    ).gain


class TruthCache:
    """True-gain runs on disk, keyed by federation, KD recipe, pair, T, α and seed."""

    def __init__(self, path: Path, context: dict) -> None:
        self.path = path
        # A digest of the federation hash and KD recipe (their full text was most of the file).
        self.prefix = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()[:16]
        self.data: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def key(self, job: tuple[int, int, float, float, int]) -> str:
        student, teacher, t, alpha, seed = job
        return f"{self.prefix}|{student}<-{teacher}|T={t!r}|alpha={alpha!r}|seed={seed}"

    def fill(self, jobs: list[tuple], pool: ProcessPoolExecutor, say=print) -> None:
        """Run the jobs not cached yet (in parallel), saving as they finish."""
        self.load()  # another stage's process may have run some meanwhile
        todo = [j for j in dict.fromkeys(jobs) if self.key(j) not in self.data]
        if not todo:
            return
        say(f"  {len(todo)} truth runs to do ({len(jobs) - len(todo)} cached)")
        start = time.perf_counter()
        for n, (job, gain) in enumerate(zip(todo, pool.map(_gain, todo), strict=True), 1):
            self.data[self.key(job)] = gain
            if n % 20 == 0 or n == len(todo):
                self.save()
                rate = n / (time.perf_counter() - start) * 60
                say(f"  {n}/{len(todo)} truth runs, {rate:.1f}/min", flush=True)

    def load(self) -> None:
        if self.path.is_file():
            self.data = {**json.loads(self.path.read_text()), **self.data}

    def save(self) -> None:
        """Merge into the file (a grid stage and a search stage may run at once) and replace
        it whole."""
        self.load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=0, sort_keys=True))
        tmp.replace(self.path)  # never a half-written cache

    def truth(self, student: int, teacher: int, t: float, alpha: float, seeds: list[int]):
        return [self.data[self.key((student, teacher, t, alpha, s))] for s in seeds]


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """``0-1,2-5`` → [(0, 1), (2, 5)]: student-teacher, the student the lower number (the
    searched position is ``a``)."""
    out = []
    for item in text.split(","):
        student, teacher = (int(v) for v in item.split("-"))
        if student >= teacher:
            raise SystemExit(f"pair {item}: the student must be the lower number (position a)")
        out.append((student, teacher))
    return out


def search(args, arm: str, seed: int) -> Path:
    """One search run through dkd-tune itself (resumed if its storage exists)."""
    db = Path(args.runs) / f"{arm}-seed{seed}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    if _complete(db, len(args.pairs)):
        return db  # a finished run: no need to start dkd-tune to find nothing to do
    cmd = [sys.executable, "-m", "tuner", "--config", args.config,
           "--pairs", ",".join(f"{s}-{t}" for s, t in args.pairs), "--seed", str(seed),
           "--workers", str(args.jobs), "--progress", "quiet", *arm_flags(arm),
           "--storage", f"sqlite:///{db}"]  # fmt: skip
    for item in NARROW:
        cmd += ["--set", item]
    start = time.perf_counter()
    with db.with_suffix(".log").open("a") as log:  # dkd-tune's own tables, kept apart
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"  {arm} seed {seed}: search and confirmation in {time.perf_counter() - start:.0f} s")
    return db


def arm_flags(arm: str) -> list[str]:
    """dkd-tune's flags for an arm: ``race`` (its defaults, cap 200), ``fixed-N``, ``warm-N``."""
    if arm == "race":
        return ["--strategy", "race", "--trials", "200"]
    name, trials = arm.split("-")
    return ["--strategy", "fixed", "--trials", trials, "--confirm", "3", "--sampler", "tpe",
            "--min-gain", "0", "--warm-start", "on" if name == "warm" else "off"]  # fmt: skip


def _complete(db: Path, pairs: int) -> bool:
    """Whether the storage holds every pair's recommendation (its search and confirmation done)."""
    if not db.is_file():
        return False
    storage = open_storage(f"sqlite:///{db}")
    recs = recommendations(storage, pair_studies(storage))
    return len(recs) == pairs and all(r is not None for r in recs.values())


def read_run(db: Path, eval_points: int) -> dict[tuple[int, int], dict]:
    """Per pair: the search's compute, the single best trial and the default trial, dkd-tune's
    recommendation, and the confirmed per-seed gains of every candidate (so that other decision
    rules can be evaluated on the same runs)."""
    storage = open_storage(f"sqlite:///{db}")
    studies = pair_studies(storage)
    recs = recommendations(storage, studies)
    out = {}
    for s in studies:
        trials = storage.get_all_trials(s._study_id, deepcopy=False)
        work = sum(
            1.0 if t.state.name == "COMPLETE" else len(t.intermediate_values) / eval_points
            for t in trials
        )
        rec = recs[s.study_name]
        best = best_trial(trials)
        default = next(t for t in trials if is_default(t.user_attrs))
        cands = [
            {"T": c.params["temperature"], "alpha": c.params["alpha"],
             "is_default": c.trial == rec.default.trial, "gains": list(c.gain)}
            for c in rec.candidates
        ]  # fmt: skip
        race = race_state(trials)
        out[tuple(s.user_attrs["pair"])] = {
            "trials": len(trials),
            "rounds": sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials),
            "configurations": len(race.configs),
            "stopped": race.stop_reason(budget_of(s.user_attrs)),
            "work": work,
            "confirm_runs": len(cands) * len(rec.seeds),
            "single": (best.params["temperature"], best.params["alpha"], best.value),
            "single_is_default": best.number == default.number,
            "default_value": default.value,
            "warm_trials": sum("warm_from" in t.user_attrs for t in trials),
            "dkd_tune_claims": not rec.recommends_default,
            "candidates": cands,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument("--pairs", type=parse_pairs, default=parse_pairs("0-1,2-5,4-6,6-8,3-7"))
    parser.add_argument("--grid-t", type=float, nargs="+", default=GRID_T, metavar="T")
    parser.add_argument("--grid-alpha", type=float, nargs="+", default=GRID_ALPHA, metavar="A")
    parser.add_argument("--truth-seeds", type=int, default=5)
    parser.add_argument("--sampler-seeds", type=int, default=3)
    parser.add_argument("--arms", default="race,fixed-30", help="race, fixed-N, warm-N")
    parser.add_argument("--jobs", type=int, default=2, help="processes (truth runs, workers)")
    parser.add_argument(
        "--stage",
        choices=("grid", "search", "all"),
        default="all",
        help="grid: only the grid's true gains; search: only the searches and their picks' "
        "true gains (the two can run at once); all: both, then the figures",
    )
    parser.add_argument("--cache", default=str(HERE / "results" / "search_truth.json"))
    parser.add_argument("--runs", default=str(HERE / "results" / "search_runs"))
    parser.add_argument("--out", default=str(HERE / "results" / "search_efficiency.json"))
    args = parser.parse_args()
    config = load_config(args.config)
    bundle = prepare_federation(config, progress=print)
    recipe = config.kd
    cache = TruthCache(
        Path(args.cache), {"federation": bundle.hash, "kd": dataclasses.asdict(recipe)}
    )
    seeds = [TRUTH_SEED_BASE + i for i in range(args.truth_seeds)]
    cells = [(t, a) for t in args.grid_t for a in args.grid_alpha]
    measured = [*cells, DEFAULT] if DEFAULT not in cells else cells  # α = 0.5 is off the grid
    pool = ProcessPoolExecutor(args.jobs, initializer=_init_worker, initargs=(args.config,))
    print(f"grid: {len(cells)} cells x {len(seeds)} truth seeds per pair", flush=True)
    grid_jobs = [(s, t, *c, seed) for s, t in args.pairs for c in measured for seed in seeds]
    if args.stage != "search":
        cache.fill(grid_jobs, pool)
    grid = {}
    for s, t in args.pairs if args.stage != "search" else ():
        means = {c: statistics.mean(cache.truth(s, t, *c, seeds)) for c in measured}
        best = max(cells, key=means.__getitem__)
        grid[(s, t)] = {"means": means, "best": best}
        print(
            f"{s} <- {t}: grid best by true gain {means[best]:+.2f} at T={best[0]}, "
            f"alpha={best[1]}; default {means[DEFAULT]:+.2f}",
            flush=True,
        )
    if args.stage == "grid":
        return
    rows = []
    for arm in args.arms.split(","):
        for seed in range(args.sampler_seeds):
            run = read_run(search(args, arm, seed), recipe.eval_points)
            jobs = []
            for pair, r in run.items():
                b, _ = _best_and_default(r)  # what any rule may recommend, and the single best
                for c in (r["single"][:2], _cell(r["candidates"][b])):
                    jobs += [(*pair, *c, x) for x in seeds]
            cache.fill(jobs, pool)
            if args.stage == "search":
                continue
            for pair, r in run.items():
                g = grid[pair]

                def true(c, pair=pair):
                    return statistics.mean(cache.truth(*pair, *c, seeds))

                rows.append(
                    {
                        "arm": arm,
                        "sampler_seed": seed,
                        "pair": pair,
                        **r,
                        "grid_best": g["best"],
                        "grid_best_true": g["means"][g["best"]],
                        "default_true": g["means"][DEFAULT],
                        "single_true": true(r["single"][:2]),
                        "best_true": true(_cell(r["candidates"][_best_and_default(r)[0]])),
                    }
                )
    pool.shutdown()
    if args.stage == "search":
        return
    summarise(rows, len(cells), args)
    Path(args.out).write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "args": _jsonable(vars(args)),
                "truth_seeds": seeds,
                "rows": rows,
            },
            indent=1,
            default=list,
        )
    )
    print(f"wrote {args.out}")


def _cell(candidate: dict) -> tuple[float, float]:
    return candidate["T"], candidate["alpha"]


def _jsonable(d: dict) -> dict:
    return {k: (v if isinstance(v, str | int | float) else str(v)) for k, v in d.items()}


def _best_and_default(r: dict) -> tuple[int, int]:
    """Indexes of the best confirmed candidate (by mean gain) and of the default."""
    cands = r["candidates"]
    best = max(range(len(cands)), key=lambda i: statistics.mean(cands[i]["gains"]))
    return best, next(i for i, c in enumerate(cands) if c["is_default"])


def pooled_sd(rows: list[dict]) -> tuple[float, int]:
    """The standard deviation of a tuned candidate's per-seed difference to the default, pooled
    over every tuned candidate of the rows (each centred on its own mean), and its degrees of
    freedom."""
    ss, df = 0.0, 0
    for r in rows:
        _, d = _best_and_default(r)
        base = r["candidates"][d]["gains"]
        for c in r["candidates"]:
            if not c["is_default"]:
                diff = [x - y for x, y in zip(c["gains"], base, strict=True)]
                m = statistics.mean(diff)
                ss += sum((x - m) ** 2 for x in diff)
                df += len(diff) - 1
    return (ss / df) ** 0.5, df


def decide(rows: list[dict], rule: str) -> list[tuple[bool, float]]:
    """Per row: (whether the rule claims the best confirmed candidate beats the default, the
    true gain of what it recommends). Rules: ``single`` (the best single trial, if not the
    default and above it), ``mean`` (the best confirmed mean, no test), ``t`` and ``t/3``
    (dkd-tune's one-sided paired t-test per pair at LEVEL, and at LEVEL / 3), ``pooled`` (the
    same test with the difference's standard deviation pooled over the run's pairs)."""
    out = []
    sd, df = pooled_sd(rows) if rule == "pooled" else (0.0, 0)
    for r in rows:
        if rule == "dkd-tune":
            claim = r["dkd_tune_claims"]
            out.append((claim, r["best_true"] if claim else r["default_true"]))
            continue
        if rule == "single":
            claim = not r["single_is_default"] and r["single"][2] > r["default_value"]
            out.append((claim, r["single_true"] if claim else r["default_true"]))
            continue
        b, d = _best_and_default(r)
        gains, base = r["candidates"][b]["gains"], r["candidates"][d]["gains"]
        diff = [x - y for x, y in zip(gains, base, strict=True)]
        if b == d:
            claim = False
        elif rule == "mean":
            claim = True
        elif rule == "pooled":
            t = statistics.mean(diff) / (sd / len(diff) ** 0.5)
            claim = float(stats.t.sf(t, df)) < LEVEL
        else:
            claim = paired_p_value(gains, base) < (LEVEL if rule == "t" else LEVEL / 3)
        out.append((claim, r["best_true"] if claim else r["default_true"]))
    return out


RULES = {
    "dkd-tune": "dkd-tune's answer (the arm's own rule)",
    "single": "single best trial (export before confirmation)",
    "mean": "best confirmed mean, no test",
    "t": f"paired t-test per pair, p < {LEVEL}, every confirmed seed (the fixed strategy's rule)",
    "t/3": f"paired t-test per pair, p < {LEVEL / 3:.4f} (Bonferroni over 3)",
    "pooled": f"paired test, sd pooled over the run's pairs, p < {LEVEL}",
}


def summarise(rows: list[dict], grid_size: int, args) -> dict:
    """The figures of bench/RESULTS.md, per arm and decision rule."""
    print(
        f"\n{len(args.pairs)} pairs x {args.sampler_seeds} sampler seeds per arm; "
        f"true gain = mean over {args.truth_seeds} unused seeds; grid {grid_size} cells"
    )
    table = {}
    for arm in args.arms.split(","):
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        compute = statistics.median(r["work"] + r["confirm_runs"] for r in mine)
        rounds = statistics.median(r["rounds"] + r["confirm_runs"] for r in mine)
        search = statistics.median(r["rounds"] for r in mine)
        configs = statistics.median(r["configurations"] for r in mine)
        print(f"{arm}: rounds per pair median {rounds:.0f} (search {search:.0f} + confirmation; "
              f"pruned ones whole), configurations {configs:.0f}")  # fmt: skip
        share = statistics.mean(r["confirm_runs"] / (r["work"] + r["confirm_runs"]) for r in mine)
        print(
            f"{arm}: compute median {compute:.1f} runs = {100 * compute / grid_size:.0f} % of the "
            f"grid's, the confirmation {100 * share:.0f} % of it; warm-start trials "
            f"{sum(r['warm_trials'] for r in mine)}"
        )
        runs = {}
        for r in mine:
            runs.setdefault(r["sampler_seed"], []).append(r)
        for rule, label in RULES.items():
            decided = [x for group in runs.values() for x in decide(group, rule)]
            order = [r for group in runs.values() for r in group]
            gaps = [r["grid_best_true"] - true for r, (_, true) in zip(order, decided, strict=True)]
            claims = [r for r, (claim, _) in zip(order, decided, strict=True) if claim]
            false = sum(
                true <= r["default_true"]
                for r, (claim, true) in zip(order, decided, strict=True)
                if claim
            )
            within = sum(g <= 0.5 for g in gaps)
            strong = [(r, c) for r, (c, _) in zip(order, decided, strict=True)
                      if r["grid_best_true"] - r["default_true"] >= 1.0]  # fmt: skip
            power = sum(c for _, c in strong) / max(len(strong), 1)
            table[(arm, rule)] = (statistics.median(gaps), within, len(gaps), len(claims), false)
            print(
                f"  {label}: below the grid's best by median {statistics.median(gaps):.2f} pp "
                f"(within 0.5 pp in {within}/{len(gaps)}); {len(claims)} claims over the "
                f"default, {false} false; power {100 * power:.0f} % of {len(strong)}"
            )
            if rule == "t" and arm != "race":  # the rule dkd-tune applied before --min-gain
                assert [c for c, _ in decided] == [r["dkd_tune_claims"] for r in order]
        for r in mine:
            b, d = _best_and_default(r)
            best = r["candidates"][b]
            print(
                f"  seed {r['sampler_seed']} {r['pair'][0]}<-{r['pair'][1]}: grid best "
                f"{r['grid_best_true']:+.2f}, default {r['default_true']:+.2f}; best confirmed "
                f"T={best['T']:.3g} a={best['alpha']:.2f} {statistics.mean(best['gains']):+.2f} "
                f"vs {statistics.mean(r['candidates'][d]['gains']):+.2f}, true "
                f"{r['best_true']:+.2f}; single best {r['single_true']:+.2f}"
            )
    return table


if __name__ == "__main__":
    main()
