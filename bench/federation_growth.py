"""A participant joins a tuned federation, on real rounds: how many rounds do its new pairs
take, and do their answers hold on fresh seeds? (issue 26 items 4 and 6; ``--scenario all``:
every pair of the federation in one ``--pairs all`` run instead)

A federation of the user's own (examples/own-federation/build_federation.py: real Fashion-MNIST
images, a partition file, checkpoints of two architectures) with ``--participants`` N is built
once in ``--work``. For each arm and sampler seed, on its own SQLite file:

1. ``dkd-tune --config before.toml --pairs all --strategy ARM --seed S``: the federation without
   its last participant (the first N−1 and their rows of the partition file), every other
   default (``--trials 200``, the race's confirmation, ``--min-gain 0.5``);
2. ``dkd-tune --config after.toml --pairs all --strategy ARM --seed S``: all N; the run keeps
   the tuned pairs (tuner.kinds.growth) and races the N−1 new ones.

Per new pair: its rounds (search rounds finished plus confirmation runs), its answer, what the
federation contributed (``federation_proposals``, ``federation_incumbent``), and the answer's
*true* difference: the recommended configuration's mean gain minus the same-student default's
over ``--truth-seeds`` seeds no search and no confirmation uses. A tuned answer is a false claim
when that true difference is ≤ 0.

Run from the repository root: ``.venv/bin/python bench/federation_growth.py`` (about 20 min on
2 idle CPU cores with the defaults); ``--out`` writes the JSON the table in bench/RESULTS.md
comes from.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from objectives import load_config, prepare_federation, run_trial
from tuner.read.results import pair_rows
from tuner.store.db import open_storage

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "own-federation" / "build_federation.py"
#: Truth seeds: far from the search's and the confirmation's (bench/search_efficiency.py).
TRUTH_SEED_BASE = 1_500_000_001


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_federation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def federation(work: Path, n: int) -> tuple[Path, Path]:
    """The federation with all ``n`` participants and the one without its last (built once)."""
    after = work / "after" / "own-federation.toml"
    builder = _builder()
    if not after.is_file():
        builder.build(after.parent, participants=n, train_size=6000, test_size=1000,
                      public_size=1500, epochs=2, name="growth")  # fmt: skip
    before = work / "before" / "own-federation.toml"
    if not before.is_file():
        before.parent.mkdir(parents=True, exist_ok=True)
        blob = json.loads((after.parent / "partition.json").read_text())
        rows = {"participants": blob["participants"][: n - 1], "public": blob["public"]}
        (before.parent / "partition.json").write_text(json.dumps(rows))
        text = builder.config_text("growth", n - 1)
        for rel in ('root = "data"', 'checkpoint = "ckpt/', 'model = "models.py'):
            head, _, tail = rel.partition('"')
            text = text.replace(rel, f'{head}"{after.parent}/{tail}')
        before.write_text(text)
    return before, after


def tune(config: Path, db: Path, arm: str, seed: int, bundles: Path) -> float:
    """One ``dkd-tune`` run as a user types it (every other default); its wall seconds."""
    cmd = [sys.executable, "-m", "tuner", "--config", str(config), "--pairs", "all",
           "--strategy", arm, "--seed", str(seed), "--storage", f"sqlite:///{db}",
           "--bundles", str(bundles), "--progress", "log"]  # fmt: skip
    start = time.perf_counter()
    with db.with_suffix(".log").open("a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def measured_pairs(db: Path, last: int | None) -> list[dict]:
    """The rows of the pairs with participant ``last`` (every pair: None), with their rounds."""
    storage = open_storage(f"sqlite:///{db}")
    rows = [r for r in pair_rows(storage) if last is None or str(last) in r["pair"].split("-")]
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    for r in rows:
        search = r["complete"] + r["pruned"]
        try:
            confirm_id = storage.get_study_id_from_name(f"{r['study']}/confirm")
        except KeyError:  # not confirmed (a race without an incumbent yet)
            confirm = 0
        else:
            confirm = len(storage.get_all_trials(confirm_id, deepcopy=False, states=done))
        r["search_rounds"], r["confirm_rounds"] = search, confirm
        r["total_rounds"] = search + confirm
    storage.engine.dispose()
    return rows


def truth(after: Path, rows: list[dict], seeds: int) -> None:
    """Each tuned answer's true difference to its default over ``seeds`` fresh seeds."""
    config = load_config(after)
    bundle = prepare_federation(config)
    for r in rows:
        if r["recommended_is_default"] or r["recommended_params"] is None:
            r["true_difference"] = None
            continue
        p = dict(r["recommended_params"])
        student, teacher = r["recommended_student"], r["recommended_teacher"]
        picks = {k: p[k] for k in ("temperature", "alpha", "divergence", "transfer_set")}
        picks["aggregation"] = p.get("aggregation", "avg")
        diffs = []
        for i in range(seeds):
            s = TRUTH_SEED_BASE + i
            tuned = run_trial(bundle, student, [teacher], seed=s, **picks).gain
            default = run_trial(bundle, student, [teacher], seed=s).gain
            diffs.append(tuned - default)
        r["true_difference"] = statistics.fmean(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/dkd-growth", help="federation and storages")
    parser.add_argument("--participants", type=int, default=5)
    parser.add_argument("--arms", default="race,federation")
    parser.add_argument("--sampler-seeds", type=int, default=3)
    parser.add_argument("--truth-seeds", type=int, default=5)
    parser.add_argument("--scenario", choices=("grow", "all"), default="grow",
                        help="grow: tune N-1 participants, then add the last (its pairs are "
                        "measured); all: every pair of the N in one --pairs all run")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    work = Path(args.work)
    before, after = federation(work, args.participants)
    last = args.participants - 1
    results: dict[str, list[dict]] = {}
    for arm in args.arms.split(","):
        for seed in range(args.sampler_seeds):
            db = work / f"{arm}-seed{seed}.db"
            for path in work.glob(f"{db.name}*"):
                path.unlink()
            first = tune(before, db, arm, seed, work / "bundles") if args.scenario == "grow" else 0
            grown = tune(after, db, arm, seed, work / "bundles")
            rows = measured_pairs(db, last if args.scenario == "grow" else None)
            truth(after, rows, args.truth_seeds)
            keep = ("pair", "total_rounds", "search_rounds", "confirm_rounds",
                    "recommended_is_default", "confirmed_difference", "true_difference",
                    "federation_proposals", "federation_incumbent", "stopped")  # fmt: skip
            results.setdefault(arm, []).append({
                "seed": seed, "before_s": round(first, 1), "grown_s": round(grown, 1),
                "pairs": [{k: r.get(k) for k in keep} for r in rows],
            })  # fmt: skip
            rounds = [r["total_rounds"] for r in rows]
            print(f"{arm} seed {seed}: before {first:.0f} s, run {grown:.0f} s; measured pairs' "
                  f"rounds {rounds} (median {statistics.median(rounds)})", flush=True)  # fmt: skip
    print()
    print(f"scenario {args.scenario}: {args.participants} participants, "
          f"{args.sampler_seeds} sampler seeds, {args.truth_seeds} truth seeds")
    print("| arm | pairs × seeds | rounds per pair, median (range) | search + confirm, "
          "median | tuned answers | false claims (true difference ≤ 0) | took from the "
          "federation | incumbent from it | run, median s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, runs in results.items():
        pairs = [p for run in runs for p in run["pairs"]]
        total = [p["total_rounds"] for p in pairs]
        tuned = [p for p in pairs if not p["recommended_is_default"]]
        false = [p for p in tuned if (p["true_difference"] or 0.0) <= 0]
        taken = sum(1 for p in pairs if p["federation_proposals"])
        held = sum(1 for p in pairs if p["federation_incumbent"])
        print(f"| {arm} | {len(pairs)} | {statistics.median(total):g} ({min(total)}–{max(total)}) "
              f"| {statistics.median(p['search_rounds'] for p in pairs):g} + "
              f"{statistics.median(p['confirm_rounds'] for p in pairs):g} | {len(tuned)} | "
              f"{len(false)} of {len(tuned)} | {taken} | {held} | "
              f"{statistics.median(r['grown_s'] for r in runs):.0f} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
