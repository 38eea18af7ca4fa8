"""Does bf16 autocast move a trial's result beyond trial-to-trial noise? And what does it save?

    .venv/bin/python bench/mixed_precision.py                    # the CPU (here)
    .venv/bin/python bench/mixed_precision.py --device cuda:0    # a GPU machine

Runs the same KD trials (default config, a few pairs, seeds 0..k-1) in fp32 and in bf16 and
prints, per pair, the gain's mean and standard deviation over the seeds for each precision, the
mean of the per-seed differences bf16 - fp32, and the median seconds per trial. "Within noise"
means the mean difference is small next to the seed-to-seed standard deviation, which is what
separates two tuning trials anyway. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from objectives import load_config, prepare_federation, run_trial  # noqa: E402

PAIRS = ((6, 8), (0, 1), (3, 2))  # student <- teacher: a large, a small and a middle gain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument("--bundles", default=str(ROOT / "bundles"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = prepare_federation(load_config(args.config), directory=args.bundles)
    run_trial(bundle, 0, [1], device=args.device)  # warm-up: data to the device, kernels
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("pair | fp32 gain (pp) | bf16 gain (pp) | mean bf16-fp32 | s/trial fp32 | s/trial bf16")
    for student, teacher in PAIRS:
        gains: dict[str, list[float]] = {"fp32": [], "bf16": []}
        seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for seed in range(args.seeds):
            for precision in ("fp32", "bf16"):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                started = time.perf_counter()
                result = run_trial(
                    bundle, student, [teacher], seed=seed, device=args.device, precision=precision
                )
                seconds[precision].append(time.perf_counter() - started)
                gains[precision].append(result.gain)
        diff = [b - f for b, f in zip(gains["bf16"], gains["fp32"], strict=True)]

        def spread(xs: list[float]) -> str:
            return f"{statistics.mean(xs):+.2f} ± {statistics.stdev(xs):.2f}"

        print(
            f"{student} <- {teacher} | {spread(gains['fp32'])} | {spread(gains['bf16'])} | "
            f"{statistics.mean(diff):+.2f} (per seed {min(diff):+.2f}..{max(diff):+.2f}) | "
            f"{statistics.median(seconds['fp32']):.3f} | {statistics.median(seconds['bf16']):.3f}"
        )


if __name__ == "__main__":
    main()
