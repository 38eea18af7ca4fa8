"""Search efficiency: TPE with median pruning against the exhaustive T × α grid (the poster's
method) on three student ← teacher pairs of the default federation.

For each pair the grid (7 temperatures × 6 α, divergence ``kl``, transfer set ``public``: the
other parameters at their defaults) gives the optimum; then dkd-tune's own sampler and pruner
(``tuner.pool.make_sampler("tpe")``, ``make_pruner("quartile")``, the default trial enqueued first)
search the same ranges for as many trials as the grid has, once per sampler seed, and we count
the trials — pruned ones included — until the best gain found is within ``--tolerance`` pp of the
grid optimum. Target: at most 20 % of the grid's trials. Every trial uses seed 0, so the gain is a
deterministic function of (T, α) and both methods search the same landscape; the grid optimum and
the default are also run at other trial seeds to show how far one trial's gain scatters (the
grid optimum is the largest of 42 such scattered values, so it sits above the landscape's mean).

The grid is the expensive part; its gains are cached in ``--cache`` (JSON, keyed by federation
hash, KD recipe, pair, T, α and seed) and reused by later runs. Run:
``.venv/bin/python bench/search_efficiency.py`` (about 20 min on 2 idle CPU cores, half of it the
grid).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import optuna

from objectives import EvalPoint, load_config, prepare_federation, run_trial
from tuner.options import PRUNERS
from tuner.pool import make_pruner, make_sampler
from tuner.space import SearchSpace

GRID_T = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
GRID_ALPHA = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT = {"temperature": 1.0, "alpha": 0.5}
HERE = Path(__file__).resolve().parent


def parse_pairs(text: str) -> list[tuple[int, int]]:
    """``6-8,0-1`` → [(6, 8), (0, 1)]: student-teacher, in that order."""
    out = []
    for item in text.split(","):
        student, teacher = (int(v) for v in item.split("-"))
        out.append((student, teacher))
    return out


class GridCache:
    """Trial gains on disk, so a second run (or a re-run elsewhere) skips the grid."""

    def __init__(self, path: Path, context: dict):
        self.path = path
        self.key_prefix = json.dumps(context, sort_keys=True)
        self.data: dict[str, float] = {}
        if path.is_file():
            self.data = json.loads(path.read_text())

    def key(self, student: int, teacher: int, t: float, alpha: float, seed: int) -> str:
        tail = f"|seed={seed}" if seed else ""  # seed 0's keys predate the seed field
        return f"{self.key_prefix}|{student}<-{teacher}|T={t}|alpha={alpha}{tail}"

    def gain(
        self, bundle, recipe, student: int, teacher: int, t: float, alpha: float, seed: int = 0
    ) -> tuple[float, bool]:
        """(gain, whether it was computed now) of one full trial."""
        key = self.key(student, teacher, t, alpha, seed)
        if key in self.data:
            return self.data[key], False
        r = run_trial(
            bundle, student, [teacher], temperature=t, alpha=alpha, seed=seed, recipe=recipe
        )
        self.data[key] = r.gain
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=0, sort_keys=True))
        tmp.replace(self.path)  # never a half-written cache
        return r.gain, True


def grid_search(
    bundle, recipe, cache: GridCache, student: int, teacher: int, noise_seeds: int
) -> dict:
    """Every (T, α) of the grid at seed 0, from the cache where present; then the grid optimum
    and the default again at seeds 1..noise_seeds, to show how much one trial's gain scatters."""
    computed = 0
    start = time.perf_counter()

    def gain_at(t: float, alpha: float, seed: int = 0) -> float:
        nonlocal computed
        gain, new = cache.gain(bundle, recipe, student, teacher, t, alpha, seed)
        computed += new
        return gain

    gains = {(t, alpha): gain_at(t, alpha) for t in GRID_T for alpha in GRID_ALPHA}
    best = max(gains, key=gains.__getitem__)
    seeds = range(noise_seeds + 1)
    default = (DEFAULT["temperature"], DEFAULT["alpha"])
    return {
        "gains": gains,
        "best": best,
        "best_gain": gains[best],
        "best_by_seed": [gain_at(*best, seed) for seed in seeds],
        "default_gain": gain_at(*default),
        "default_by_seed": [gain_at(*default, seed) for seed in seeds],
        "computed": computed,
        "seconds": time.perf_counter() - start,
    }


def tpe_search(
    bundle,
    recipe,
    student: int,
    teacher: int,
    seed: int,
    sampler: str,
    trials: int,
    pruner: str = "quartile",
    startup: int | None = None,
    multivariate: bool = False,
) -> list[dict]:
    """``trials`` trials as a dkd-tune pair study runs them (default first, then the sampler,
    pruned on the evaluation points); each trial's T, α, state, gain and share of a full trial
    run."""
    space = SearchSpace(temperature=(GRID_T[0], GRID_T[-1]), alpha=(0.0, 1.0))
    if startup is None and not multivariate:
        chosen = make_sampler(sampler, space, seed)  # dkd-tune's own
    else:  # the same TPE with other random startup trials and/or a joint model of T and α
        chosen = optuna.samplers.TPESampler(
            seed=seed,
            constant_liar=True,
            n_startup_trials=10 if startup is None else startup,
            multivariate=multivariate,
        )
    study = optuna.create_study(
        direction="maximize", sampler=chosen, pruner=make_pruner(pruner, recipe.eval_points)
    )
    study.enqueue_trial(DEFAULT)  # every dkd-tune study starts with the default trial
    out = []
    for _ in range(trials):
        trial = study.ask()
        t = trial.suggest_float("temperature", *space.temperature, log=True)
        alpha = trial.suggest_float("alpha", *space.alpha)
        reached = [0.0]

        def on_eval(point: EvalPoint, trial=trial, reached=reached) -> None:
            reached[0] = point.index / point.points
            trial.report(point.gain, point.index)
            if not point.final and trial.should_prune():
                raise optuna.TrialPruned()

        try:
            r = run_trial(
                bundle,
                student,
                [teacher],
                temperature=t,
                alpha=alpha,
                seed=0,
                on_eval=on_eval,
                recipe=recipe,
            )
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            out.append({"T": t, "alpha": alpha, "gain": None, "work": reached[0]})
            continue
        study.tell(trial, r.gain)
        out.append({"T": t, "alpha": alpha, "gain": r.gain, "work": 1.0})
    return out


def trials_to(run: list[dict], target: float) -> tuple[int | None, float]:
    """(trials until a complete gain >= target, or None; the work spent until then)."""
    work = 0.0
    for n, trial in enumerate(run, 1):
        work += trial["work"]
        if trial["gain"] is not None and trial["gain"] >= target:
            return n, work
    return None, work


def summary(counts: list[int | None], size: int) -> str:
    done = sorted(c for c in counts if c is not None)
    # A run that never got there counts as the whole budget (a lower bound on its cost).
    med = statistics.median([c if c is not None else size for c in counts])
    return (
        f"median {med:g} trials = {100 * med / size:.0f} % of the grid, "
        f"{len(done)}/{len(counts)} runs got there"
        + (f" (in {', '.join(map(str, done))})" if done else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument("--pairs", default="0-1,3-2,6-8", help="student-teacher, comma-separated")
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds per pair")
    parser.add_argument(
        "--tolerance",
        type=float,
        nargs="+",
        default=[0.5, 1.0],
        help="pp below the grid optimum (the first is the target's)",
    )
    parser.add_argument(
        "--noise-seeds",
        type=int,
        default=4,
        help="trial seeds 1..N for the optimum and the default (noise)",
    )
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    parser.add_argument("--pruner", default="quartile", choices=PRUNERS)
    parser.add_argument(
        "--startup",
        type=int,
        default=None,
        help="TPE's random startup trials (default: dkd-tune's sampler, 10)",
    )
    parser.add_argument(
        "--multivariate",
        action="store_true",
        help="TPE with one joint density over T and alpha (default: dkd-tune's, independent)",
    )
    parser.add_argument("--cache", default=str(HERE / "results" / "search_grid.json"))
    parser.add_argument("--out", default=str(HERE / "results" / "search_efficiency.json"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(args.config)
    bundle = prepare_federation(config, progress=print)
    recipe = config.kd
    context = {"federation": bundle.hash, "kd": dataclasses.asdict(recipe), "seed": 0}
    cache = GridCache(Path(args.cache), context)
    size = len(GRID_T) * len(GRID_ALPHA)
    rows = []
    for student, teacher in parse_pairs(args.pairs):
        grid = grid_search(bundle, recipe, cache, student, teacher, args.noise_seeds)
        t_best, a_best = grid["best"]
        sd_best = statistics.stdev(grid["best_by_seed"])
        sd_default = statistics.stdev(grid["default_by_seed"])
        print(
            f"{student} <- {teacher}: grid optimum {grid['best_gain']:+.2f} pp at T={t_best}, "
            f"alpha={a_best} (over {len(grid['best_by_seed'])} trial seeds "
            f"{statistics.mean(grid['best_by_seed']):+.2f} ± {sd_best:.2f}); default "
            f"{grid['default_gain']:+.2f} ({statistics.mean(grid['default_by_seed']):+.2f} ± "
            f"{sd_default:.2f}); {grid['computed']} trials run, the rest cached "
            f"({grid['seconds']:.0f} s)",
            flush=True,
        )
        near = {
            tol: sum(g >= grid["best_gain"] - tol for g in grid["gains"].values())
            for tol in args.tolerance
        }
        print("  grid points within " + ", ".join(f"{tol} pp: {n}" for tol, n in near.items()))
        runs = []
        for seed in range(args.seeds):
            run = tpe_search(
                bundle,
                recipe,
                student,
                teacher,
                seed,
                args.sampler,
                size,
                args.pruner,
                args.startup,
                args.multivariate,
            )
            runs.append(run)
            hits = [trials_to(run, grid["best_gain"] - tol)[0] for tol in args.tolerance]
            best = max(t["gain"] for t in run if t["gain"] is not None)
            print(
                f"  {args.sampler} seed {seed}: best {best:+.2f} in {size} trials "
                f"({sum(t['work'] for t in run):.1f} trial-equivalents); first within "
                + ", ".join(
                    f"{tol} pp: {h or '-'}" for tol, h in zip(args.tolerance, hits, strict=True)
                ),
                flush=True,
            )
        rows.append(
            {
                "student": student,
                "teacher": teacher,
                "grid_best_gain": grid["best_gain"],
                "grid_best": {"temperature": t_best, "alpha": a_best},
                "grid_best_by_seed": grid["best_by_seed"],
                "default_gain": grid["default_gain"],
                "default_by_seed": grid["default_by_seed"],
                "grid": {f"{t},{a}": g for (t, a), g in grid["gains"].items()},
                "runs": runs,
            }
        )
    print(
        f"\ngrid: {len(GRID_T)} T x {len(GRID_ALPHA)} alpha = {size} trials per pair; "
        f"{args.sampler}, pruner {args.pruner}, {args.seeds} sampler seeds per pair"
    )
    for tol in args.tolerance:
        every = []
        for row in rows:
            counts = [trials_to(run, row["grid_best_gain"] - tol)[0] for run in row["runs"]]
            every += counts
            print(f"within {tol} pp, {row['student']} <- {row['teacher']}: {summary(counts, size)}")
        print(f"within {tol} pp, all pairs: {summary(every, size)}")
    work = [sum(t["work"] for t in run) / len(run) for row in rows for run in row["runs"]]
    print(f"a pruned-search trial costs {statistics.mean(work):.2f} of a full trial on average")
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "sampler": args.sampler,
        "pruner": args.pruner,
        "startup": args.startup,
        "multivariate": args.multivariate,
        "tolerance": args.tolerance,
        "grid": {"temperature": GRID_T, "alpha": GRID_ALPHA},
        "pairs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
