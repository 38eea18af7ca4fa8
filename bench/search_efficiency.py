"""Search efficiency: TPE with median pruning against the exhaustive T × α grid (the poster's
method) on three student ← teacher pairs of the default federation.

For each pair the grid (7 temperatures × 6 α, divergence ``kl``, transfer set ``public``: the
other parameters at their defaults) gives the optimum; then dkd-tune's own sampler and pruner
(``tuner.pool.make_sampler("tpe")``, ``make_pruner("median")``, the default trial enqueued first)
search the same ranges, once per sampler seed, and we count the trials — pruned ones included —
until the best gain found is within ``--tolerance`` pp of the grid optimum. Target: at most 20 %
of the grid's trials. Every trial uses seed 0, so the gain is a deterministic function of (T, α)
and both methods search the same landscape.

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
    """Grid gains on disk, so a second run (or a re-run elsewhere) skips the grid."""

    def __init__(self, path: Path, context: dict):
        self.path, self.context = path, context
        self.key_prefix = json.dumps(context, sort_keys=True)
        self.data: dict[str, float] = {}
        if path.is_file():
            self.data = json.loads(path.read_text())

    def key(self, student: int, teacher: int, t: float, alpha: float) -> str:
        return f"{self.key_prefix}|{student}<-{teacher}|T={t}|alpha={alpha}"

    def get(self, *args) -> float | None:
        return self.data.get(self.key(*args))

    def put(self, value: float, *args) -> None:
        self.data[self.key(*args)] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=0, sort_keys=True))
        tmp.replace(self.path)  # never a half-written cache


def grid_search(bundle, recipe, cache: GridCache, student: int, teacher: int) -> dict:
    """Every (T, α) of the grid, from the cache where present."""
    computed = 0
    start = time.perf_counter()

    def gain_at(t: float, alpha: float) -> float:
        nonlocal computed
        gain = cache.get(student, teacher, t, alpha)
        if gain is None:
            r = run_trial(
                bundle, student, [teacher], temperature=t, alpha=alpha, seed=0, recipe=recipe
            )
            gain = r.gain
            cache.put(gain, student, teacher, t, alpha)
            computed += 1
        return gain

    gains = {(t, alpha): gain_at(t, alpha) for t in GRID_T for alpha in GRID_ALPHA}
    best = max(gains, key=gains.__getitem__)
    return {
        "gains": gains,
        "best": best,
        "best_gain": gains[best],
        "default_gain": gain_at(DEFAULT["temperature"], DEFAULT["alpha"]),
        "computed": computed,
        "seconds": time.perf_counter() - start,
    }


def tpe_search(
    bundle,
    recipe,
    student: int,
    teacher: int,
    target: float,
    seed: int,
    sampler: str,
    max_trials: int,
) -> dict:
    """Trials until the best complete gain reaches ``target``, as dkd-tune's study runs them."""
    space = SearchSpace(temperature=(GRID_T[0], GRID_T[-1]), alpha=(0.0, 1.0))
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler(sampler, space, seed),
        pruner=make_pruner("median", recipe.eval_points),
    )
    study.enqueue_trial(DEFAULT)  # every dkd-tune study starts with the default trial
    best, work = -float("inf"), 0.0
    for n in range(1, max_trials + 1):
        trial = study.ask()
        t = trial.suggest_float("temperature", *space.temperature, log=True)
        alpha = trial.suggest_float("alpha", *space.alpha)
        reached = [0]

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
            work += reached[0]
            continue
        study.tell(trial, r.gain)
        work += 1.0
        best = max(best, r.gain)
        if best >= target:
            return {"trials": n, "work": work, "best": best, "reached": True}
    return {"trials": max_trials, "work": work, "best": best, "reached": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/fashion-mnist.toml")
    parser.add_argument("--pairs", default="0-1,3-2,6-8", help="student-teacher, comma-separated")
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds per pair")
    parser.add_argument("--tolerance", type=float, default=0.5, help="pp below the grid optimum")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random"))
    parser.add_argument("--cache", default=str(HERE / "results" / "search_grid.json"))
    parser.add_argument("--out", default=str(HERE / "results" / "search_efficiency.json"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(args.config)
    bundle = prepare_federation(config, progress=print)
    recipe = config.kd
    context = {"federation": bundle.hash, "kd": dataclasses.asdict(recipe), "seed": 0}
    cache = GridCache(Path(args.cache), context)
    grid_size = len(GRID_T) * len(GRID_ALPHA)
    rows = []
    for student, teacher in parse_pairs(args.pairs):
        grid = grid_search(bundle, recipe, cache, student, teacher)
        t_best, a_best = grid["best"]
        target = grid["best_gain"] - args.tolerance
        print(
            f"{student} <- {teacher}: grid optimum {grid['best_gain']:+.2f} pp at T={t_best}, "
            f"alpha={a_best}; default (T=1, alpha=0.5) {grid['default_gain']:+.2f}; "
            f"{grid['computed']} trials run, the others from the cache "
            f"({grid['seconds']:.0f} s)",
            flush=True,
        )
        runs = []
        for seed in range(args.seeds):
            run = tpe_search(
                bundle, recipe, student, teacher, target, seed, args.sampler, grid_size
            )
            runs.append(run)
            print(
                f"  {args.sampler} seed {seed}: "
                + (f"{run['trials']} trials" if run["reached"] else f"not within {grid_size}")
                + f" ({run['work']:.2f} trial-equivalents of work), best {run['best']:+.2f}",
                flush=True,
            )
        rows.append(
            {
                "student": student,
                "teacher": teacher,
                "grid_best_gain": grid["best_gain"],
                "default_gain": grid["default_gain"],
                "grid_best": {"temperature": t_best, "alpha": a_best},
                "grid": {f"{t},{a}": g for (t, a), g in grid["gains"].items()},
                "runs": runs,
            }
        )
    print(f"\ngrid: {len(GRID_T)} T x {len(GRID_ALPHA)} alpha = {grid_size} trials per pair")
    all_trials = [r["trials"] if r["reached"] else grid_size for row in rows for r in row["runs"]]
    all_work = [r["work"] for row in rows for r in row["runs"]]
    reached = sum(r["reached"] for row in rows for r in row["runs"])
    for row in rows:
        trials = [r["trials"] if r["reached"] else grid_size for r in row["runs"]]
        print(
            f"{row['student']} <- {row['teacher']}: trials to within {args.tolerance} pp: median "
            f"{statistics.median(trials)} (min {min(trials)}, max {max(trials)}) = "
            f"{100 * statistics.median(trials) / grid_size:.0f} % of the grid"
        )
    print(
        f"all pairs and seeds: median {statistics.median(all_trials)} trials = "
        f"{100 * statistics.median(all_trials) / grid_size:.0f} % of the grid "
        f"(target <= 20 %), {reached}/{len(all_trials)} runs reached the target; median work "
        f"{statistics.median(all_work):.2f} trial-equivalents = "
        f"{100 * statistics.median(all_work) / grid_size:.0f} % of the grid's"
    )
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "sampler": args.sampler,
        "tolerance": args.tolerance,
        "grid": {"temperature": GRID_T, "alpha": GRID_ALPHA},
        "pairs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
