"""What separates a trial from its FLOP floor on the CPU: the measurements behind RESULTS.md's
"what limits the gap" (the small CNN of the default config, one training step of 128 images).

1. the matmul rate the FLOP floor divides by, at several sizes, and the rate GEMMs of the
   model's own layer shapes reach (a convolution is a GEMM of im2col rows × kernel);
2. where a training step's time goes, by operator (torch.profiler);
3. the candidate speed-ups: one forward of the transfer and local batches together (256 rows)
   instead of two of 128; evaluation batch size; 1 vs all threads; torch.compile.

Variants are timed interleaved (a, b, a, b, …) so they see the same load on a shared machine.
Run: ``.venv/bin/python bench/floor_gap.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from objectives import load_config, prepare_federation
from objectives.models import count_flops


def interleaved(variants: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each variant, timed in turn ``repeats`` times after one warm-up."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul(m: int, k: int, n: int, repeats: int) -> float:
    """FLOP/s of an [m, k] × [k, n] float32 matmul (median of ``repeats`` timed batches)."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    inner = max(1, int(2e9 / (2 * m * k * n)))  # about 2 GFLOP per timing

    def run() -> None:
        for _ in range(inner):
            a @ b

    seconds = interleaved({"mm": run}, repeats)["mm"]
    return 2 * m * k * n * inner / seconds


def layer_gemms(model: nn.Module, x: torch.Tensor) -> list[tuple[str, int, int, int]]:
    """(layer, M, K, N) of each conv/linear layer's forward GEMM on input ``x``."""
    shapes = []

    def conv(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        k = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
        shapes.append(
            (
                f"conv {mod.in_channels}->{mod.out_channels}",
                out.shape[0] * out.shape[2] * out.shape[3],
                k,
                mod.out_channels,
            )
        )

    def linear(mod: nn.Linear, _inp, out: torch.Tensor) -> None:
        shapes.append(
            (
                f"linear {mod.in_features}->{mod.out_features}",
                out.shape[0],
                mod.in_features,
                mod.out_features,
            )
        )

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    args = parser.parse_args()
    bundle = prepare_federation(load_config(args.config))
    recipe = bundle.config.kd
    bs = recipe.batch_size
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, median of {args.repeats} repeats")

    print("\n1. matmul rates (float32)")
    for size in (512, 1024, 2048):
        rate = matmul(size, size, size, args.repeats)
        print(f"  square {size}: {rate / 1e9:6.1f} GFLOP/s")
    model = bundle.model(0).train()
    x = bundle.dataset.train_x[:bs]
    total_flops = total_s = 0.0
    for name, m, k, n in layer_gemms(model, x):
        rate = matmul(m, k, n, args.repeats)
        total_flops += 2 * m * k * n
        total_s += 2 * m * k * n / rate
        print(f"  {name:<18} GEMM [{m} x {k}] x [{k} x {n}]: {rate / 1e9:6.1f} GFLOP/s")
    print(f"  the model's GEMM shapes together: {total_flops / total_s / 1e9:.1f} GFLOP/s")

    y = bundle.dataset.train_y[:bs]
    x2 = bundle.dataset.train_x[bs : 2 * bs]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def two_forwards() -> None:  # what a trial does: transfer batch and local batch apart
        loss = model(x).logsumexp(1).mean() + F.cross_entropy(model(x2), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    both = torch.cat([x, x2])

    def one_forward() -> None:  # the candidate: both batches through one forward
        z = model(both)
        loss = z[:bs].logsumexp(1).mean() + F.cross_entropy(z[bs:], y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    print("\n2. one training step (2 x 128 images), by operator")
    two_forwards()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            two_forwards()
    groups = {
        "conv/linear (the FLOPs)": ("convolution", "addmm", "aten::mm", "linear"),
        "batch norm": ("batch_norm",),
        "max pool": ("max_pool",),
        "relu": ("relu", "threshold", "clamp"),
    }
    shares: dict[str, float] = defaultdict(float)
    total = 0.0
    for ev in prof.key_averages():
        if not ev.key.startswith("aten::"):
            continue
        total += ev.self_cpu_time_total
        group = next((g for g, keys in groups.items() if any(k in ev.key for k in keys)), "other")
        shares[group] += ev.self_cpu_time_total
    for group, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<26} {100 * t / total:5.1f} %")

    print("\n3. candidate speed-ups")
    step = interleaved({"two": two_forwards, "one": one_forward}, args.repeats)
    print(
        f"  train step, two forwards of {bs}: {1e3 * step['two']:.1f} ms; one forward of "
        f"{2 * bs}: {1e3 * step['one']:.1f} ms ({step['two'] / step['one']:.2f}x)"
    )
    fwd = count_flops(bundle.model(0).eval(), x[:1])
    flop_step = 3 * fwd * 2 * bs
    print(
        f"  FLOPs of a step {flop_step / 1e9:.2f} G -> {flop_step / step['two'] / 1e9:.1f} "
        f"GFLOP/s achieved"
    )
    test_x = bundle.dataset.test_x

    def evaluate(batch: int) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            with torch.inference_mode():
                for xb in test_x.split(batch):
                    model(xb)
            model.train()

        return run

    ev = interleaved({b: evaluate(b) for b in (500, 2000, 10000)}, args.repeats)
    print(
        "  evaluation of the 10,000 test images: "
        + ", ".join(f"batch {b}: {1e3 * s:.0f} ms" for b, s in ev.items())
    )

    def with_threads(n: int) -> Callable[[], None]:
        def run() -> None:
            torch.set_num_threads(n)
            two_forwards()
            torch.set_num_threads(threads)

        return run

    th = interleaved({n: with_threads(n) for n in sorted({1, threads})}, args.repeats)
    print("  train step by threads: " + ", ".join(f"{n}: {1e3 * s:.1f} ms" for n, s in th.items()))
    if args.compile:
        compiled = torch.compile(model)

        def compiled_step() -> None:
            loss = compiled(x).logsumexp(1).mean() + F.cross_entropy(compiled(x2), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        start = time.perf_counter()
        compiled_step()
        warm = time.perf_counter() - start
        cs = interleaved({"eager": two_forwards, "compiled": compiled_step}, args.repeats)
        print(
            f"  torch.compile: first step {warm:.0f} s (compilation); eager "
            f"{1e3 * cs['eager']:.1f} ms, compiled {1e3 * cs['compiled']:.1f} ms"
        )


if __name__ == "__main__":
    main()
