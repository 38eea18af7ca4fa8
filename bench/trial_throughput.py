"""Trial throughput on this machine: dkd-tune's trial against a straightforward loop and the floor.

(a) ``objectives.run_trial`` on the default config;
(b) the same trial written as research code usually is: a Dataset with per-item transforms, a
    DataLoader, the teacher's forward pass on every batch, separate evaluation DataLoaders;
(c) the floor: the student's forward+backward for the same steps plus one evaluation forward on
    pre-made tensors, and the FLOP floor (the trial's FLOPs over the measured matmul rate).

Same model, data, steps and evaluation points; the gains of (a) and (b) are printed side by side
to show they agree within trial-to-trial noise. Run: ``make bench`` or
``.venv/bin/python bench/trial_throughput.py --repeats 5``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from objectives import load_config, prepare_federation, run_trial
from objectives.models import count_flops
from objectives.trial import eval_subset

STUDENT, TEACHER = 0, 1
T, ALPHA = 1.0, 0.5


class ItemDataset(TorchDataset):
    """Per-item transform from raw pixels, as torchvision datasets do (ToTensor + Normalize)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float().div(255.0)
        return (x - self.mean) / self.std, self.labels[i]


def straightforward_trial(bundle, seed: int) -> float:
    """(b): returns the gain in pp. Teacher forward per batch, DataLoaders everywhere."""
    torch.manual_seed(seed)
    ds, recipe = bundle.dataset, bundle.config.kd
    mean, std = 0.2860, 0.3530
    raw_train = (ds.train_x * std + mean).mul(255).round().to(torch.uint8)  # back to pixels
    raw_test = (ds.test_x * std + mean).mul(255).round().to(torch.uint8)
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
    teacher = bundle.model(TEACHER).to(memory_format=torch.contiguous_format).eval()
    student = bundle.model(STUDENT).to(memory_format=torch.contiguous_format).train()
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
                hits += (student(x).argmax(1) == y).sum().item()
                n += len(y)
        student.train()
        return 100.0 * hits / n

    for step, (x_u, _) in enumerate(transfer, 1):
        with torch.no_grad():
            t_logits = teacher(x_u)
        kd = F.kl_div(
            F.log_softmax(student(x_u) / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean"
        )
        x_l, y_l = next(local_iter)
        loss = ALPHA * T * T * kd + (1 - ALPHA) * F.cross_entropy(student(x_l), y_l)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in eval_at:
            accuracy(sub_loader)
    return accuracy(test_loader) - float(bundle.accuracy[STUDENT])


def floor_trial(bundle, steps: int) -> None:
    """(c): the student's forward+backward for the same steps, one evaluation, nothing else."""
    ds, recipe = bundle.dataset, bundle.config.kd
    student = bundle.model(STUDENT).train()
    opt = torch.optim.SGD(student.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    x = ds.train_x[: recipe.batch_size].contiguous()
    y = ds.train_y[: recipe.batch_size]
    for _ in range(steps):
        loss = student(x).logsumexp(1).mean() + F.cross_entropy(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()
    with torch.inference_mode():
        for xb in ds.test_x.split(recipe.eval_batch_size):
            student(xb)


def matmul_rate(seconds: float = 2.0) -> float:
    """Measured float32 matmul FLOP/s of this machine (the denominator of the FLOP floor)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - start)


def timed(fn, repeats: int) -> tuple[list[float], list]:
    times, outs = [], []
    for r in range(repeats):
        start = time.perf_counter()
        outs.append(fn(r))
        times.append(time.perf_counter() - start)
    return times, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/fashion-mnist.toml")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bundle = prepare_federation(load_config(args.config), progress=print)
    recipe = bundle.config.kd
    run_trial(bundle, STUDENT, [TEACHER])  # warm-up: oneDNN builds its kernels per shape once
    straightforward_trial(bundle, 0)

    a_times, a_res = timed(lambda r: run_trial(bundle, STUDENT, [TEACHER], seed=r), args.repeats)
    b_times, b_gain = timed(lambda r: straightforward_trial(bundle, r), args.repeats)
    steps = a_res[0].steps
    c_times, _ = timed(lambda r: floor_trial(bundle, steps), args.repeats)

    sample = bundle.dataset.test_x[:1]
    fwd = count_flops(bundle.model(STUDENT).eval(), sample)
    train_images = steps * 2 * recipe.batch_size  # one transfer and one local batch per step
    eval_images = len(bundle.dataset.test_y) + (recipe.eval_points - 1) * recipe.eval_subset
    flops = 3 * fwd * train_images + fwd * eval_images  # backward ≈ 2× forward
    rate = matmul_rate()
    flop_floor = flops / rate

    def row(name: str, times: list[float]) -> str:
        med = statistics.median(times)
        spread = (max(times) - min(times)) / 2
        return f"{name:<34} {med:7.3f} s ± {spread:.3f}   {60 / med:6.1f} trials/min"

    a_med, b_med, c_med = (statistics.median(t) for t in (a_times, b_times, c_times))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(
        f"steps per trial {steps}, forward {fwd / 1e6:.2f} MFLOP/image, "
        f"trial {flops / 1e9:.1f} GFLOP"
    )
    print(f"matmul rate {rate / 1e9:.1f} GFLOP/s -> FLOP floor {flop_floor:.3f} s")
    print(row("(a) dkd-tune run_trial", a_times))
    print(row("(b) straightforward loop", b_times))
    print(row("(c) floor: fwd+bwd + one eval", c_times))
    print(
        f"speed-up (b)/(a): {b_med / a_med:.2f}x   (a)/(c): {a_med / c_med:.2f}x   "
        f"(a)/FLOP floor: {a_med / flop_floor:.2f}x"
    )
    gains_a = [r.gain for r in a_res]
    print(
        f"gain (a) {statistics.mean(gains_a):+.2f} ± {statistics.pstdev(gains_a):.2f} pp   "
        f"(b) {statistics.mean(b_gain):+.2f} ± {statistics.pstdev(b_gain):.2f} pp"
    )


if __name__ == "__main__":
    main()
