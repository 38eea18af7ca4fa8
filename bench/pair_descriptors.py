"""Issue 26 item 1: which descriptors of a pair, measurable in `prepare` without a round, predict
where its best configuration lies.

Descriptors come from the federation bundle only (accuracies before KD, the cached logits on the
public split, the partition's label distributions); targets from the true-gain grids of
bench/results/search_truth.json (every pair with 5 truth seeds on >= 40 configurations, the 43
configurations all of them share). Prints, per directed pair student<-teacher, the descriptors and
targets; the Spearman correlation of each descriptor with each target; whether pairs close in
descriptors have similar landscapes (what a GP over (configuration, descriptors) would learn from);
and the regret of simple rules against the default's. ``--reverse S-T`` first runs the grid of
student S <- teacher T (the same 43 configurations x 5 truth seeds, cached in the truth file).
Usage: DKD_TUNE_BUNDLES=/work/bundles python bench/pair_descriptors.py [--reverse 7-3 --jobs 1]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import random
import statistics
from concurrent.futures import ProcessPoolExecutor

import torch
from federation_landscape import HERE, load
from scipy.stats import spearmanr
from scipy.stats import t as student_t
from search_efficiency import DEFAULT, TRUTH_SEED_BASE, TruthCache, _init_worker

from objectives import load_config, prepare_federation
from objectives.divergences import js, kl
from objectives.train import accuracy

SEEDS = [TRUTH_SEED_BASE + i for i in range(5)]
DESCRIPTORS = ("acc_s", "acc_t", "gap", "pub_s", "pub_t", "agree", "teach", "kl", "js", "tv")
TARGETS = ("best_T", "best_alpha", "top5_log2T", "top5_alpha", "best_gain", "over_default",
           "matters")
NEAR = 0.5  # pp: configurations this close to the best are not told apart by 5 seeds (se ~0.38)
PERMUTATIONS = 2_000


def descriptors(bundle, s: int, t: int) -> dict[str, float]:
    """What `prepare` knows of student s <- teacher t: accuracies (test, public), agreement and
    divergence of their predictions on the public split at T = 1, label-distribution distance."""
    pub = bundle.partition.public
    y = bundle.dataset.train_y[pub]
    zs, zt = bundle.train_logits[s, pub], bundle.train_logits[t, pub]
    ls, lt = torch.log_softmax(zs.double(), -1), torch.log_softmax(zt.double(), -1)
    hs, ht = zs.argmax(1), zt.argmax(1)
    ld = bundle.label_distribution
    acc_s, acc_t = float(bundle.accuracy[s]), float(bundle.accuracy[t])
    return {
        "acc_s": acc_s, "acc_t": acc_t, "gap": acc_t - acc_s,  # test accuracy before KD, %
        "pub_s": accuracy(zs, y), "pub_t": accuracy(zt, y),  # on the public (transfer) split, %
        "agree": 100.0 * (hs == ht).double().mean().item(),  # argmax match on public, %
        # public items the teacher gets right and the student wrong: what there is to teach, %
        "teach": 100.0 * ((ht == y) & (hs != y)).double().mean().item(),
        "kl": kl(lt, ls).mean().item(),  # KL(teacher || student), nats, mean over public
        "js": js(lt, ls).mean().item(),
        "tv": 0.5 * float((ld[s] - ld[t]).abs().sum()),  # label distributions of the partition
    }


def parse_config(key: str) -> tuple[float, float]:
    t, a = key.split("|")
    return float(t.removeprefix("T=")), float(a.removeprefix("alpha="))


def run_reverse(config: str, bundle_hash: str, kd: dict, pair: str, configs, jobs: int) -> None:
    """Fill the truth cache with student<-teacher on ``configs`` x the 5 truth seeds."""
    s, t = (int(v) for v in pair.split("-"))
    cache = TruthCache(HERE / "search_truth.json", {"federation": bundle_hash, "kd": kd})
    work = [(s, t, *parse_config(k), seed) for k in configs for seed in SEEDS]
    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(config,)) as pool:
        cache.fill(work, pool)


def critical_rho(n: int, level: float = 0.05) -> float:
    """|rho| above which a two-sided test rejects at ``level`` (t approximation)."""
    q = student_t.ppf(1 - level / 2, n - 2)
    return q / (n - 2 + q * q) ** 0.5


def mantel(dist: list[float], sim: list[float], pairs: list[str], desc, rng) -> tuple[float, float]:
    """Spearman of descriptor distance vs landscape similarity over pairs of pairs, and its
    permutation p-value (pairs' descriptors shuffled; pairs of pairs are not independent)."""
    rho = spearmanr(dist, sim).statistic
    n_pairs = list(itertools.combinations(range(len(pairs)), 2))
    hits = 0
    for _ in range(PERMUTATIONS):
        perm = rng.sample(range(len(pairs)), len(pairs))
        d = [desc(perm[i], perm[j]) for i, j in n_pairs]
        hits += abs(spearmanr(d, sim).statistic) >= abs(rho) - 1e-12
    return rho, (hits + 1) / (PERMUTATIONS + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument("--reverse", help="S-T: run student S <- teacher T's grid first")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    study = load_config(args.config)
    bundle = prepare_federation(study)
    kd = dataclasses.asdict(study.kd)
    prefix = TruthCache(HERE / "search_truth.json", {"federation": bundle.hash, "kd": kd}).prefix
    raw = json.loads((HERE / "search_truth.json").read_text())
    if not any(k.startswith(prefix + "|") for k in raw):
        raise SystemExit(f"the truth cache has no runs of federation {bundle.hash} with this KD "
                         f"recipe (prefix {prefix}): use the config the cache was made with")
    data = load()
    full = {p: c for p, c in data.items() if sum(len(v) == 5 for v in c.values()) >= 40}
    configs = sorted(set.intersection(*(
        {k for k, v in c.items() if len(v) == 5} for c in full.values())))
    if args.reverse:
        run_reverse(args.config, bundle.hash, kd, args.reverse, configs, args.jobs)
        data = load()
        full = {p: c for p, c in data.items() if sum(len(v) == 5 for v in c.values()) >= 40}
    # The grid bench's pairs have the lower-numbered participant as student; a swapped pair
    # (run by --reverse) is held out: the rules below were stated and fitted without it.
    pairs = sorted(p for p in full if int(p.split("<-")[0]) < int(p.split("<-")[1]))
    held = sorted(set(full) - set(pairs))
    n = len(pairs)
    mean = {p: [statistics.fmean(full[p][k]) for k in configs] for p in full}
    dflt = configs.index(f"T={DEFAULT[0]!r}|alpha={DEFAULT[1]!r}")
    rows = {}
    for p in pairs + held:
        s, t = (int(v) for v in p.split("<-"))
        b = max(range(len(configs)), key=mean[p].__getitem__)
        bt, ba = parse_config(configs[b])
        over = mean[p][b] - mean[p][dflt]
        top5 = [parse_config(configs[i]) for i in sorted(
            range(len(configs)), key=mean[p].__getitem__, reverse=True)[:5]]
        near = [parse_config(configs[i]) for i in range(len(configs))
                if mean[p][i] >= mean[p][b] - NEAR]
        rows[p] = {**descriptors(bundle, s, t), "best_T": bt, "best_alpha": ba,
                   # the top 5's centre: less at the mercy of one noisy mean than the argmax
                   "top5_log2T": statistics.fmean(math.log2(c[0]) for c in top5),
                   "top5_alpha": statistics.fmean(c[1] for c in top5),
                   "near_best": len(near), "near_T": [min(c[0] for c in near),
                                                      max(c[0] for c in near)],
                   "near_alpha": [min(c[1] for c in near), max(c[1] for c in near)],
                   "best_gain": mean[p][b], "default_gain": mean[p][dflt],
                   "over_default": over, "matters": float(over >= 1.0)}
    print(f"{n} pairs x {len(configs)} configurations x 5 truth seeds (federation {bundle.hash}, "
          f"truth prefix {prefix})")
    print("pair   " + " ".join(f"{d:>6s}" for d in DESCRIPTORS) + " | best_T b_alpha  best  "
          "dflt  over matters")
    for p in pairs + held:
        r = rows[p]
        print(f"{p:6s} " + " ".join(f"{r[d]:6.2f}" if d not in ("kl", "js", "tv") else
                                    f"{r[d]:6.3f}" for d in DESCRIPTORS)
              + f" | {r['best_T']:6.2f} {r['best_alpha']:6.1f} {r['best_gain']:5.2f} "
              f"{r['default_gain']:5.2f} {r['over_default']:5.2f} {int(r['matters']):7d}")
    print(f"\nwithin {NEAR} pp of the best (not told apart by 5 seeds): configurations, T range, "
          "alpha range; top 5's mean log2 T and alpha")
    for p in pairs + held:
        r = rows[p]
        print(f"{p:6s} {r['near_best']:2d}  T {r['near_T'][0]:5.2f}..{r['near_T'][1]:5.2f}  "
              f"alpha {r['near_alpha'][0]:.1f}..{r['near_alpha'][1]:.1f}  top5 log2T "
              f"{r['top5_log2T']:+.2f} alpha {r['top5_alpha']:.2f}")
    crit = critical_rho(n)
    print(f"\nSpearman rho (descriptor x target), n = {n}; |rho| >= {crit:.2f} for p < 0.05 "
          f"(t approximation), {len(DESCRIPTORS) * len(TARGETS)} tests: ~"
          f"{0.05 * len(DESCRIPTORS) * len(TARGETS):.1f} pass by chance")
    print(f"{'':8s}" + " ".join(f"{t:>12s}" for t in TARGETS))
    corr: dict[str, dict[str, list[float]]] = {}
    for d in DESCRIPTORS:
        corr[d] = {}
        cells = []
        for tg in TARGETS:
            res = spearmanr([rows[p][d] for p in pairs], [rows[p][tg] for p in pairs])
            corr[d][tg] = [res.statistic, res.pvalue]
            cells.append(f"{res.statistic:+.2f} p={res.pvalue:.2f}"
                         + ("*" if abs(res.statistic) >= crit else " "))
        print(f"{d:8s}" + " ".join(f"{c:>12s}" for c in cells))
    # Do pairs close in a descriptor have similar landscapes? (Mantel-style, over pairs of pairs)
    sim = [spearmanr(mean[p], mean[q]).statistic for p, q in itertools.combinations(pairs, 2)]
    zs = {d: statistics.pstdev([rows[p][d] for p in pairs]) or 1.0 for d in DESCRIPTORS}
    rng = random.Random(0)
    distance_fns = {d: (lambda i, j, d=d: abs(rows[pairs[i]][d] - rows[pairs[j]][d]))
                    for d in DESCRIPTORS}
    distance_fns["all (z)"] = lambda i, j: sum(
        ((rows[pairs[i]][d] - rows[pairs[j]][d]) / zs[d]) ** 2 for d in DESCRIPTORS) ** 0.5
    idx = list(itertools.combinations(range(n), 2))
    mant = {}
    print(f"\nlandscape similarity (Spearman of mean gains, {len(sim)} pairs of pairs) vs "
          f"descriptor distance; a GP over descriptors needs rho < 0; p by {PERMUTATIONS} "
          "permutations of the pairs")
    for name, fn in distance_fns.items():
        rho, pval = mantel([fn(i, j) for i, j in idx], sim, pairs, fn, rng)
        mant[name] = [rho, pval]
        print(f"  {name:8s} rho {rho:+.2f} p={pval:.3f}")
    # Rules: regret = the pair's best mean gain - the mean gain of the configuration a rule picks
    def cell(t: float, a: float) -> int:
        return configs.index(f"T={t!r}|alpha={a!r}")

    def gap_rule(p: str) -> int:  # stated before looking: T = 1, alpha by who is better
        g = rows[p]["gap"]
        return cell(1.0, 0.8 if g >= 5 else 0.2 if g <= -5 else 0.5)

    def nearest(p: str, names) -> int:  # leave-one-out: the nearest other pair's best
        sd = {d: statistics.pstdev([rows[q][d] for q in pairs]) or 1.0 for d in names}
        q = min((q for q in pairs if q != p), key=lambda q: sum(
            ((rows[p][d] - rows[q][d]) / sd[d]) ** 2 for d in names))
        return max(range(len(configs)), key=mean[q].__getitem__)

    rules = {
        "default T=1 a=0.5": lambda p: dflt,
        "gap rule (a priori)": gap_rule,
        "nearest pair by gap": lambda p: nearest(p, ("gap",)),
        "nearest pair, all desc.": lambda p: nearest(p, DESCRIPTORS),
        "others' mean argmax": lambda p: max(range(len(configs)), key=lambda i: statistics.fmean(
            mean[q][i] for q in pairs if q != p)),
        # suggested by the similarity table above (gap): pool only pairs on the same side
        "same-sign gap mean argm.": lambda p: max(range(len(configs)), key=lambda i: (
            statistics.fmean(mean[q][i] for q in pairs if q != p
                             and (rows[q]["gap"] > 0) == (rows[p]["gap"] > 0)))),
    }
    regret: dict[str, dict[str, float]] = {}
    print("\nregret, pp (the pair's best mean gain - the rule's pick's); 'other' = median over "
          "another pair's best")
    print(f"{'rule':24s} " + " ".join(f"{p:>6s}" for p in pairs) + "  median   mean"
          + "".join(f" {p:>6s}" for p in held) + (" (held out)" if held else ""))
    for name, pick in rules.items():
        regret[name] = {p: max(mean[p]) - mean[p][pick(p)] for p in pairs + held}
        v = [regret[name][p] for p in pairs]
        print(f"{name:24s} " + " ".join(f"{x:6.2f}" for x in v)
              + f" {statistics.median(v):6.2f} {statistics.fmean(v):6.2f}"
              + "".join(f" {regret[name][p]:6.2f}" for p in held))
    other = {p: statistics.median(max(mean[p]) - mean[p][max(range(len(configs)),
                                                               key=mean[q].__getitem__)]
                                  for q in pairs if q != p) for p in pairs + held}
    regret["another pair's best"] = other
    v = [other[p] for p in pairs]
    print(f"{'another pair best (med)':24s} " + " ".join(f"{x:6.2f}" for x in v)
          + f" {statistics.median(v):6.2f} {statistics.fmean(v):6.2f}"
          + "".join(f" {other[p]:6.2f}" for p in held))
    reverse = {}
    for p in held:
        s, t = p.split("<-")
        q = f"{t}<-{s}"
        if q in pairs:
            others = [spearmanr(mean[p], mean[o]).statistic for o in pairs if o != q]
            reverse[f"{p} vs {q}"] = {"rho": spearmanr(mean[p], mean[q]).statistic,
                                      "vs_others": others}
            print(f"\nheld out {p} (the reverse of {q}): Spearman of mean gains with {q} "
                  f"{reverse[f'{p} vs {q}']['rho']:+.2f}; with the {len(others)} other pairs "
                  f"median {statistics.median(others):+.2f}, range {min(others):+.2f}.."
                  f"{max(others):+.2f}")
    out = {"date": "2026-12-05", "federation": bundle.hash, "truth_prefix": prefix,
           "pairs": pairs, "held_out": held, "configs": configs, "rows": rows, "critical_rho": crit,
           "spearman": corr, "mantel": mant, "regret": regret, "reverse": reverse}
    (HERE / "pair_descriptors.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
