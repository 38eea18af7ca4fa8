"""Experiment: the transfer and local batches of a step through ONE forward (256 rows) instead of
two (128 each). Faster on the CPU, but BatchNorm then normalises each batch with the statistics
of both, and its running statistics move once per step instead of twice — so the trial's result
may change. This measures both: time per trial, interleaved, and the gain over the same seeds.

The fused step replaces ``objectives.kd_round.StepLoss`` in this process only (the product keeps
two forwards unless the gains agree within the seed-to-seed noise). Run:
``.venv/bin/python bench/fused_forward.py --seeds 8``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import objectives.kd_round as kd_round
from objectives import load_config, prepare_federation, run_trial
from objectives.divergences import kd_term

STUDENT, TEACHER = 0, 1


class FusedStepLoss(kd_round.StepLoss):
    """StepLoss with one forward for both batches (public transfer sets with 0 < α < 1)."""

    def __call__(
        self, model: torch.nn.Module, idx: torch.Tensor, lidx: torch.Tensor | None = None
    ) -> torch.Tensor:
        a, t = self.alpha, self.temperature
        if self.transfer_set == "local" or not 0 < a < 1:
            return super().__call__(model, idx, lidx)
        lidx = lidx if lidx is not None else next(self.local_stream)
        z = model(torch.cat([self.x_transfer[idx], self.x_local[lidx]]))
        n = len(idx)
        kd = kd_term(self.targets[:, idx], z[:n], t, self.divergence)
        return a * kd + (1 - a) * F.cross_entropy(z[n:], self.y_local[lidx])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    bundle = prepare_federation(load_config(args.config))
    two_forwards = kd_round.StepLoss
    results: dict[str, list] = {"two": [], "one": []}
    times: dict[str, list] = {"two": [], "one": []}
    run_trial(bundle, STUDENT, [TEACHER])  # warm-up
    for seed in range(args.seeds):
        for name, cls in (("two", two_forwards), ("one", FusedStepLoss)):
            kd_round.StepLoss = cls
            start = time.perf_counter()
            results[name].append(run_trial(bundle, STUDENT, [TEACHER], seed=seed).gain)
            times[name].append(time.perf_counter() - start)
    kd_round.StepLoss = two_forwards
    diffs = [o - t for o, t in zip(results["one"], results["two"], strict=True)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.seeds} seeds")
    for name in ("two", "one"):
        g, s = results[name], times[name]
        print(
            f"{name} forward(s): {statistics.median(s):.3f} s per trial (median), gain "
            f"{statistics.mean(g):+.2f} ± {statistics.stdev(g):.2f} pp (mean ± sd over seeds)"
        )
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    print(
        f"paired difference one - two: {statistics.mean(diffs):+.2f} ± {se:.2f} pp (mean ± se); "
        f"speed-up {statistics.median(times['two']) / statistics.median(times['one']):.2f}x"
    )


if __name__ == "__main__":
    main()
