"""Issue 26 item 1: how well one pair's true-gain landscape predicts another's.

Reads bench/results/search_truth.json (directed pairs student<-teacher, 5 truth seeds per
configuration), keeps the configurations every full-grid pair has on all 5 seeds, and prints
(a) Spearman correlation of mean true gains between pairs grouped by what they share,
with split-half reliability of a pair's own landscape as the noise ceiling, and
(b) regret of borrowing other pairs' best configuration vs. the default's regret.
Pair descriptors (c), from the federation bundle: bench/pair_descriptors.py.
Usage: python bench/federation_landscape.py
"""
from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from pathlib import Path

from scipy.stats import spearmanr

HERE = Path(__file__).parent / "results"


def load() -> dict[str, dict[str, list[float]]]:
    """pair -> config ('T=..|alpha=..') -> gains over the truth seeds."""
    raw = json.loads((HERE / "search_truth.json").read_text())
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, gain in raw.items():
        _fed, pair, t, a, _seed = key.split("|")
        out[pair][t + "|" + a].append(gain)  # already pp
    return out


def main() -> None:
    data = load()
    full = {p: c for p, c in data.items() if sum(len(v) == 5 for v in c.values()) >= 40}
    shared = sorted(set.intersection(*(
        {k for k, v in c.items() if len(v) == 5} for c in full.values())))
    pairs = sorted(full)
    mean = {p: [statistics.fmean(full[p][k]) for k in shared] for p in pairs}
    sd = [statistics.stdev(full[p][k]) for p in pairs for k in shared]
    print(f"{len(pairs)} pairs x {len(shared)} configurations x 5 seeds; "
          f"per-config seed sd median {statistics.median(sd):.2f} pp "
          f"(se of a 5-seed mean {statistics.median(sd) / 5 ** 0.5:.2f} pp)")
    # split-half: seeds {0,1} vs {2,3,4}; Spearman-Brown to 5 seeds
    rel = {}
    for p in pairs:
        a = [statistics.fmean(full[p][k][:2]) for k in shared]
        b = [statistics.fmean(full[p][k][2:]) for k in shared]
        r = spearmanr(a, b).statistic
        rel[p] = 2 * r / (1 + r)
    groups: dict[str, list[float]] = defaultdict(list)
    for p, q in itertools.combinations(pairs, 2):
        (ps, pt), (qs, qt) = p.split("<-"), q.split("<-")
        g = ("reverse" if (ps, pt) == (qt, qs) else "same student" if ps == qs
             else "same teacher" if pt == qt else "student of one = teacher of other"
             if ps == qt or pt == qs else "no one shared")
        groups[g].append(spearmanr(mean[p], mean[q]).statistic)
    res: dict = {"pairs": pairs, "configs": shared, "seeds": 5,
                 "reliability": rel, "groups": {}}
    rv = list(rel.values())
    print(f"split-half reliability (Spearman-Brown, 5 seeds): median "
          f"{statistics.median(rv):.2f}, range {min(rv):.2f}..{max(rv):.2f}")
    for g, rs in sorted(groups.items()):
        res["groups"][g] = rs
        print(f"(a) {g:34s} n={len(rs):2d} median {statistics.median(rs):.2f} "
              f"range {min(rs):.2f}..{max(rs):.2f}")
    # (b) regret of other pairs' best and of the others' mean-landscape argmax
    dflt = next((i for i, k in enumerate(shared) if k == "T=1.0|alpha=0.5"), None)
    res["regret"] = {}
    for p in pairs:
        best = max(mean[p])
        others = [q for q in pairs if q != p]
        idx = range(len(shared))
        borrowed = [best - mean[p][max(idx, key=mean[q].__getitem__)] for q in others]
        avg = [statistics.fmean(mean[q][i] for q in others) for i in range(len(shared))]
        pooled = best - mean[p][max(range(len(shared)), key=avg.__getitem__)]
        d = best - mean[p][dflt] if dflt is not None else float("nan")
        res["regret"][p] = {"other_best_median": statistics.median(borrowed),
                            "others_mean_argmax": pooled, "default": d}
        print(f"(b) {p}: regret pp — another pair's best median {statistics.median(borrowed):.2f}, "
              f"others' mean argmax {pooled:.2f}, default {d:.2f}")
    (HERE / "federation_landscape.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
