"""Trial throughput on this machine: dkd-tune's trial against a straightforward loop and the floor.

(a) ``objectives.run_trial`` on the default config;
(b) the same trial written as research code usually is: a Dataset with per-item transforms, a
    DataLoader, the teacher's forward pass on every batch, separate evaluation DataLoaders;
(c) the floor: the student's forward+backward for the same steps plus one evaluation forward on
    pre-made tensors, and the FLOP floor (the trial's FLOPs over the measured matmul rate);
(d) with ``--batch-trials K``: K trials at once (``objectives.batched.run_trials``), as trials
    per minute against (a) one at a time.

Repeats are interleaved — rate, a, b, c, d, rate, a, b, c, d, … — so on a shared machine every
variant sees the same load; times are printed as median ± half-range (and the minimum), ratios
are taken within each repeat and printed as median [min-max] over the repeats. Same model,
data, steps and evaluation points; the gains are printed side by side to show they agree within
trial-to-trial noise.

``--model resnet18`` times the paper-scale student on a synthetic federation of CIFAR-10's shape
(no dataset needed; pre-training is one epoch, its accuracy does not matter for timing), and
estimates the 45-pair × 200-trial run from the measured per-trial time. ``--device cuda:0`` and
``--precision bf16`` run the same on a GPU. Run: ``make bench``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from objectives import load_config, prepare_federation, run_trial
from objectives.batched import TrialSpec, run_trials
from objectives.evaluation import eval_subset
from objectives.models import count_flops

STUDENT, TEACHER = 0, 1
T, ALPHA = 1.0, 0.5
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


class ItemDataset(TorchDataset):
    """Per-item transform from raw pixels, as torchvision datasets do (ToTensor + Normalize)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float()
        if self.images.dtype == torch.uint8:
            x = x.div(255.0)
        return (x - self.mean) / self.std, self.labels[i]


def raw_images(bundle) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The splits as a dataset on disk holds them: uint8 pixels for Fashion-MNIST (NCHW);
    synthetic data has no pixel form, so it stays float with an identity normalisation."""
    ds = bundle.dataset
    if ds.name == "fashion-mnist":

        def to_pixels(x: torch.Tensor) -> torch.Tensor:
            return (x * FASHION_STD + FASHION_MEAN).mul(255).round().to(torch.uint8).contiguous()

        return to_pixels(ds.train_x), to_pixels(ds.test_x), FASHION_MEAN, FASHION_STD
    return ds.train_x.contiguous(), ds.test_x.contiguous(), 0.0, 1.0


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def straightforward_trial(bundle, seed: int, device: torch.device, precision: str) -> float:
    """(b): returns the gain in pp. Teacher forward per batch, DataLoaders everywhere."""
    torch.manual_seed(seed)
    ds, recipe = bundle.dataset, bundle.config.kd
    raw_train, raw_test, mean, std = raw_images(bundle)
    public, local = bundle.partition.public, bundle.partition.participants[STUDENT]
    transfer = DataLoader(
        ItemDataset(raw_train[public], ds.train_y[public], mean, std),
        batch_size=recipe.batch_size,
        shuffle=True,
    )
    local_loader = DataLoader(
        ItemDataset(raw_train[local], ds.train_y[local], mean, std),
        batch_size=recipe.batch_size,
        shuffle=True,
    )
    subset = eval_subset(bundle, recipe.eval_subset)
    sub_loader = DataLoader(ItemDataset(raw_test[subset], ds.test_y[subset], mean, std), 256)
    test_loader = DataLoader(ItemDataset(raw_test, ds.test_y, mean, std), 256)
    # Research code keeps PyTorch's default NCHW layout (dkd-tune's models are channels_last).
    teacher = bundle.model(TEACHER, device).to(memory_format=torch.contiguous_format).eval()
    student = bundle.model(STUDENT, device).to(memory_format=torch.contiguous_format).train()
    opt = torch.optim.SGD(
        student.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True
    )
    total = len(transfer)
    eval_at = {round(total * i / recipe.eval_points) for i in range(1, recipe.eval_points)}
    local_iter = itertools.cycle(local_loader)

    def accuracy(loader) -> float:
        student.eval()
        hits = n = 0
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                hits += (student(x).argmax(1) == y).sum().item()
                n += len(y)
        student.train()
        return 100.0 * hits / n

    for step, (x_u, _) in enumerate(transfer, 1):
        x_u = x_u.to(device)
        with autocast(device, precision):
            with torch.no_grad():
                t_logits = teacher(x_u)
            kd = F.kl_div(
                F.log_softmax(student(x_u).float() / T, 1),
                F.softmax(t_logits.float() / T, 1),
                reduction="batchmean",
            )
            x_l, y_l = next(local_iter)
            x_l, y_l = x_l.to(device), y_l.to(device)
            loss = ALPHA * T * T * kd + (1 - ALPHA) * F.cross_entropy(student(x_l).float(), y_l)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in eval_at:
            accuracy(sub_loader)
    return accuracy(test_loader) - float(bundle.accuracy[STUDENT])


def floor_trial(bundle, steps: int, device: torch.device, precision: str) -> None:
    """(c): the student's forward+backward for the same steps, one evaluation, nothing else."""
    recipe = bundle.config.kd
    student = bundle.model(STUDENT, device).train()
    opt = torch.optim.SGD(student.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    data = bundle.on(device)
    x = data.train_x[: recipe.batch_size]
    y = data.train_y[: recipe.batch_size]
    for _ in range(steps):
        with autocast(device, precision):
            loss = student(x).float().logsumexp(1).mean() + F.cross_entropy(student(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    with torch.inference_mode():
        for xb in data.test_x.split(recipe.eval_batch_size):
            student(xb)
    sync(device)


def matmul_rate(device: torch.device, precision: str, size: int, seconds: float = 2.0) -> float:
    """Measured matmul FLOP/s of this device (the denominator of the FLOP floor): square
    ``size``² matrices in the trial's dtype (float32, or bfloat16 under --precision bf16)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
        if device.type == "cuda" and n % 50:
            continue
        sync(device)
    sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def synthetic_cifar(scale: str, bundles: str | None):
    """A federation of CIFAR-10's shape (3×32×32, 10 classes) on generated data, ResNet-18."""
    sizes = {
        "full": ["data.train_size=50000", "data.test_size=10000", "federation.public_size=5000"],
        "small": [
            "data.train_size=1500",
            "data.test_size=500",
            "federation.public_size=500",
            "federation.min_size=50",
            "kd.eval_subset=200",
        ],
    }[scale]
    config = load_config(
        "cifar10-resnet18",
        [
            "name=bench-synthetic-cifar-" + scale,
            "data.dataset=synthetic",
            "data.image_size=32",
            "data.channels=3",
            "pretrain.epochs=1",  # timing only: the pre-trained accuracy does not matter here
            *sizes,
        ],
    )
    folder = bundles or str(Path(tempfile.gettempdir()) / "dkd-tune-bench-bundles")
    return prepare_federation(config, folder, progress=print)


def stats(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), (max(times) - min(times)) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="fashion-mnist")
    parser.add_argument(
        "--model",
        choices=("small-cnn", "resnet18"),
        default="small-cnn",
        help="resnet18: synthetic CIFAR-10-shaped federation (see --scale)",
    )
    parser.add_argument(
        "--scale",
        choices=("full", "small"),
        default="full",
        help="resnet18 data: CIFAR-10's sizes, or a small one for a CPU check",
    )
    parser.add_argument("--bundles", default=None, help="bundle folder for the synthetic one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch-trials",
        type=int,
        default=0,
        metavar="K",
        help="also time K trials at once against K one at a time (d)",
    )
    parser.add_argument("--skip", default="", help="variants to leave out, e.g. b or bc")
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=0,
        help="square matmul size of the rate (default 1024 CPU, 8192 GPU)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.model == "resnet18":
        bundle = synthetic_cifar(args.scale, args.bundles)
    else:
        bundle = prepare_federation(load_config(args.config), progress=print)
    recipe = bundle.config.kd
    extra = {} if args.precision == "fp32" else {"precision": args.precision}
    k = args.batch_trials
    specs = [
        TrialSpec(STUDENT, (TEACHER,), temperature=T * 2 ** (j % 4), alpha=ALPHA) for j in range(k)
    ]

    def a(r: int):
        return run_trial(bundle, STUDENT, [TEACHER], seed=r, device=device, **extra)

    def b(r: int):
        return straightforward_trial(bundle, r, device, args.precision)

    def c(r: int):
        return floor_trial(bundle, steps, device, args.precision)

    def d(r: int):
        seeded = [
            TrialSpec(s.student, s.teachers, s.temperature, s.alpha, seed=r * k + j)
            for j, s in enumerate(specs)
        ]
        return run_trials(bundle, seeded, device=device, **extra)

    variants: dict[str, Callable[[int], object]] = {"a": a, "b": b, "c": c}
    if k:
        variants["d"] = d
    variants = {n: f for n, f in variants.items() if n == "a" or n not in args.skip}
    # Warm-up: oneDNN / cuDNN pick their kernels per shape once, CUDA builds its context.
    steps = a(0).steps
    for name, fn in variants.items():
        if name != "a":
            fn(0)
    size = args.matmul_size or (1024 if device.type == "cpu" else 8192)
    times: dict[str, list[float]] = {n: [] for n in variants}
    outs: dict[str, list] = {n: [] for n in variants}
    rates: list[float] = []
    for r in range(args.repeats):
        # The matmul rate is measured in every repeat too: under a varying load the FLOP floor
        # must see the same load as the trials it is compared with.
        rates.append(matmul_rate(device, args.precision, size, seconds=1.0))
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            outs[name].append(fn(r))
            sync(device)
            times[name].append(time.perf_counter() - start)

    sample = bundle.dataset.test_x[:1]
    fwd = count_flops(bundle.model(STUDENT).eval(), sample)
    train_images = steps * 2 * recipe.batch_size  # one transfer and one local batch per step
    eval_images = len(bundle.dataset.test_y) + (recipe.eval_points - 1) * min(
        recipe.eval_subset, len(bundle.dataset.test_y)
    )
    flops = 3 * fwd * train_images + fwd * eval_images  # backward ≈ 2× forward
    rate = statistics.median(rates)
    flop_floor = flops / rate
    floors = [flops / r for r in rates]

    def row(name: str, seconds: list[float], per: int = 1) -> str:
        med, spread = stats([s / per for s in seconds])
        return (
            f"{name:<40} {med:8.3f} s ± {spread:.3f} (min {min(seconds) / per:.3f})"
            f"   {60 / med:7.1f} trials/min"
        )

    def ratio(name: str, num: list[float], den: list[float]) -> str:
        """The ratio within each repeat (same load), median [min–max] over the repeats."""
        values = [n / d for n, d in zip(num, den, strict=True)]
        return f"{name}: {statistics.median(values):.2f}x [{min(values):.2f}-{max(values):.2f}]"

    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", {torch.get_num_threads()} threads, {args.precision}, model {args.model}, "
        f"{args.repeats} repeats interleaved"
    )
    print(
        f"steps per trial {steps}, forward {fwd / 1e6:.2f} MFLOP/image, "
        f"trial {flops / 1e9:.1f} GFLOP ({train_images} images trained, {eval_images} evaluated)"
    )
    print(
        f"matmul rate ({size}x{size}) {rate / 1e9:.1f} GFLOP/s (median; max "
        f"{max(rates) / 1e9:.1f}) -> FLOP floor {flop_floor:.3f} s"
    )
    print(row("(a) dkd-tune run_trial", times["a"]))
    if "b" in times:
        print(row("(b) straightforward loop", times["b"]))
    if "c" in times:
        print(row("(c) floor: fwd+bwd + one eval", times["c"]))
    if "d" in times:
        print(row(f"(d) {k} trials at once, per trial", times["d"], per=k))
    ratios = []
    if "b" in times:
        ratios.append(ratio("(b)/(a)", times["b"], times["a"]))
    if "c" in times:
        ratios.append(ratio("(a)/(c)", times["a"], times["c"]))
    ratios.append(ratio("(a)/FLOP floor", times["a"], floors))
    if "d" in times:
        ratios.append(ratio("trials/s (d)/(a)", [k * t for t in times["a"]], times["d"]))
    print("ratios " + "   ".join(ratios))
    gains_a = [r.gain for r in outs["a"]]
    line = f"gain (a) {statistics.mean(gains_a):+.2f} ± {statistics.pstdev(gains_a):.2f} pp"
    if "b" in outs:
        line += f"   (b) {statistics.mean(outs['b']):+.2f} ± {statistics.pstdev(outs['b']):.2f} pp"
    if "d" in outs:
        at_t = [
            o.gain
            for batch in outs["d"]
            for o, s in zip(batch, specs, strict=True)
            if s.temperature == T
        ]
        if at_t:
            line += f"   (d, T={T}) {statistics.mean(at_t):+.2f} ± {statistics.pstdev(at_t):.2f} pp"
    print(line)
    if args.model == "resnet18" and args.scale == "full":  # CIFAR-10 sizes: a real estimate
        med = {n: stats(t)[0] for n, t in times.items()}
        per_trial = min(med["a"], med["d"] / k if "d" in med else math.inf)
        print(
            f"45 pairs x 200 trials at {per_trial:.3f} s per trial (best of (a), (d)): "
            f"{45 * 200 * per_trial / 60:.1f} min on this device"
        )


if __name__ == "__main__":
    main()
