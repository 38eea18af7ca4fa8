"""Does the pruner kill good trials? Recorded learning curves replayed through Optuna's pruners.

For each pair, ``--trials`` random (T, α) points (the search ranges of bench/search_efficiency,
divergence ``kl``, transfer set ``public``, trial seed 0) are run to the end with no pruning,
recording the gain at every evaluation point of the round. Then each pruner rule sees the same
trials in ``--orders`` random orders, through a real Optuna study (``report`` and
``should_prune`` as the tuner calls them), and we count what it costs and what it loses:

* work: trial-equivalents spent per trial (a trial pruned at point i of k costs i/k);
* good trials pruned: of the trials whose final gain is within ``--tolerance`` pp of the pair's
  best, the share the rule pruned;
* best kept: the best final gain among the trials the rule let finish, below the best of all;
* good per work: good trials finished per trial-equivalent of work, against no pruning (1.00):
  below 1 the rule throws away good trials faster than it saves time.

The gain at an intermediate point is measured on ``eval_subset`` test images, the final one on
all of them. The curves are kept in ``--cache`` (JSON) and replayed from there by later runs.
Run: ``.venv/bin/python bench/pruner_check.py`` (about 3 min on 2 idle cores, the first time).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path

import optuna
from search_efficiency import GRID_ALPHA, GRID_T  # bench/ is on the path when run as a script

from objectives import EvalPoint, load_config, prepare_federation, run_trial
from tuner.worker.pool import make_pruner

T_RANGE, ALPHA_RANGE = (GRID_T[0], GRID_T[-1]), (GRID_ALPHA[0], GRID_ALPHA[-1])
HERE = Path(__file__).resolve().parent


#: dkd-tune's pruners and variants of them, each made fresh for every replay.
RULES: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "none": lambda k: make_pruner("none", k),
    "dkd-tune quartile": lambda k: make_pruner("quartile", k),
    "quartile, from point 1": lambda k: optuna.pruners.PercentilePruner(
        75.0, n_startup_trials=5, n_warmup_steps=0
    ),
    "dkd-tune median": lambda k: make_pruner("median", k),
    "median, from point 2": lambda k: optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=2
    ),
    "dkd-tune hyperband": lambda k: make_pruner("hyperband", k),
}


def curves(bundle, recipe, student: int, teacher: int, n: int, seed: int) -> list[list[float]]:
    """``n`` random (T, α) trials, each the list of its gains at the evaluation points."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = math.exp(rng.uniform(*map(math.log, T_RANGE)))
        alpha = rng.uniform(*ALPHA_RANGE)
        gains: list[float] = []

        def on_eval(point: EvalPoint, gains=gains) -> None:
            gains.append(point.gain)

        run_trial(
            bundle,
            student,
            [teacher],
            temperature=t,
            alpha=alpha,
            seed=0,
            on_eval=on_eval,
            recipe=recipe,
        )
        out.append(gains)
        print(
            f"  {student} <- {teacher} trial {i + 1}/{n}: T={t:.2f} alpha={alpha:.2f} "
            f"gains {' '.join(f'{g:+.1f}' for g in gains)}",
            flush=True,
        )
    return out


def replay(pruner: optuna.pruners.BasePruner, order: list[list[float]]) -> list[int]:
    """The evaluation points each trial reached under ``pruner`` (its last point: finished)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    reached = []
    for gains in order:
        trial = study.ask()
        for index, gain in enumerate(gains, 1):
            trial.report(gain, index)
            if index < len(gains) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, gains[-1])
        reached.append(index)
    return reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument("--pairs", default="3-2,6-8", help="student-teacher, comma-separated")
    parser.add_argument("--trials", type=int, default=40, help="random trials per pair")
    parser.add_argument("--orders", type=int, default=20, help="random orders replayed per rule")
    parser.add_argument("--tolerance", type=float, default=1.0, help="pp below the pair's best")
    parser.add_argument("--cache", type=Path, default=HERE / "results" / "pruner_curves.json")
    args = parser.parse_args()
    cache = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(args.config)
    bundle = prepare_federation(config)
    recipe = config.kd
    for item in args.pairs.split(","):
        student, teacher = (int(v) for v in item.split("-"))
        key = f"{bundle.hash}|{student}<-{teacher}|{args.trials}"
        if key not in cache:  # the curves are the slow part: kept for later replays
            seed = student * 100 + teacher
            cache[key] = curves(bundle, recipe, student, teacher, args.trials, seed)
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            args.cache.write_text(json.dumps(cache))
        recorded = cache[key]
        points = len(recorded[0])
        best = max(g[-1] for g in recorded)
        good = [i for i, g in enumerate(recorded) if g[-1] >= best - args.tolerance]
        print(
            f"\n{student} <- {teacher}: {len(recorded)} trials, best final gain {best:+.2f} pp, "
            f"{len(good)} within {args.tolerance} pp of it; {args.orders} orders per rule"
        )
        for name, rule in RULES.items():
            work, lost, shortfall = [], [], []
            for k in range(args.orders):
                idx = list(range(len(recorded)))
                random.Random(k).shuffle(idx)
                order = [recorded[i] for i in idx]
                reached = dict(zip(idx, replay(rule(recipe.eval_points), order), strict=True))
                work.append(sum(reached.values()) / (points * len(idx)))
                lost.append(sum(reached[i] < points for i in good) / len(good))
                kept = max(recorded[i][-1] for i in idx if reached[i] == points)
                shortfall.append(best - kept)
            print(
                f"  {name:<24} work {statistics.mean(work):.2f} of full trials; good trials "
                f"pruned {100 * statistics.mean(lost):.0f} %; best kept "
                f"{statistics.mean(shortfall):.2f} pp below the best "
                f"(worst order {max(shortfall):.2f}); good per work "
                f"{(1 - statistics.mean(lost)) / statistics.mean(work):.2f}"
            )


if __name__ == "__main__":
    main()
