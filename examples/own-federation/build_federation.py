"""Build a small heterogeneous federation "of one's own" from Fashion-MNIST, as a user would have
one: an imagefolder of PNGs, a partition file, participants of two architectures trained on their
own partitions and saved as state_dict checkpoints, and the dkd-tune config that lists them.

    python build_federation.py OUT [--participants 6] [--train-size 12000] [--test-size 2000]

Participants 0, 2, 4, ... are ``models.py:TinyCNN`` (a file next to the config), 1, 3, 5, ...
dkd-tune's small CNN imported by package (``objectives.models:build_model``). The tests build a
tiny one with :func:`build` too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from objectives.config import FederationConfig, TrainRecipe
from objectives.data import fashion_mnist_arrays
from objectives.models import build_model
from objectives.partition import make_partition
from objectives.train import train_supervised

HERE = Path(__file__).resolve().parent
#: The normalisation the participants are trained with (Fashion-MNIST's training statistics);
#: the config states it as [data].mean/std so dkd-tune feeds them the same inputs.
MEAN, STD = 0.2860, 0.3530
CLASSES = 10
FILE_MODEL = {"model": "models.py:TinyCNN", "kwargs": {"channels": 1, "classes": CLASSES}}
PACKAGE_MODEL = {
    "model": "objectives.models:build_model",
    "kwargs": {"name": "small-cnn", "channels": 1, "classes": CLASSES, "image_size": 28},
}


def architecture(k: int) -> dict:
    """Participant k's model string and kwargs: the two architectures alternate."""
    return FILE_MODEL if k % 2 == 0 else PACKAGE_MODEL


def make_model(k: int) -> torch.nn.Module:
    """Participant k's model, built the way the config tells dkd-tune to build it."""
    arch = architecture(k)
    if arch is PACKAGE_MODEL:
        return build_model(**arch["kwargs"])
    sys.path.insert(0, str(HERE))
    try:
        from models import TinyCNN
    finally:
        sys.path.remove(str(HERE))
    return TinyCNN(**arch["kwargs"])


def write_imagefolder(folder: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """PNGs in ``folder/<class>/<nnnnn>.png`` in the order dkd-tune (and torchvision's
    ImageFolder) reads them: classes in folder order, files in name order. Returns the labels in
    that order (index i of the dataset is file number i)."""
    order = np.argsort(labels, kind="stable")
    for i, j in enumerate(order):
        target = folder / f"class-{labels[j]}" / f"{i:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[j]).save(target)  # uint8 [28, 28]: 8-bit grey
    return labels[order], images[order]


def build(
    out: str | Path,
    participants: int = 6,
    train_size: int = 12000,
    test_size: int = 2000,
    public_size: int = 3000,
    epochs: int = 3,
    seed: int = 0,
    name: str = "own-fmnist",
) -> Path:
    """Write the whole federation into ``out``; return the config file's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    raw = fashion_mnist_arrays()
    splits = {}
    for split, n in (("train", train_size), ("test", test_size)):
        pick = np.sort(rng.choice(len(raw[f"{split}_y"]), n, replace=False))
        labels, images = write_imagefolder(
            out / "data" / split, raw[f"{split}_x"][pick], raw[f"{split}_y"][pick]
        )
        splits[split] = (images, labels)
    train_x, train_y = splits["train"]

    # The user's partition: Dirichlet(0.5) label skew, drawn once and kept in a file.
    fed = FederationConfig(
        participants=participants,
        partition="dirichlet:0.5",
        public_size=public_size,
        min_size=100,
    )
    part = make_partition(torch.from_numpy(train_y.astype(np.int64)), fed, seed)
    (out / "partition.json").write_text(
        json.dumps(
            {
                "participants": [p.tolist() for p in part.participants],
                "public": part.public.tolist(),
            }
        )
    )

    # Each participant trained on its own partition only, with the user's normalisation.
    x = (torch.from_numpy(train_x).float().div(255.0).unsqueeze(1) - MEAN) / STD
    y = torch.from_numpy(train_y.astype(np.int64))
    recipe = TrainRecipe(epochs=epochs, lr=0.05, batch_size=64)
    (out / "ckpt").mkdir(exist_ok=True)
    for k, idx in enumerate(part.participants):
        torch.manual_seed(seed * 101 + k)
        net = make_model(k)
        train_supervised(net, x[idx], y[idx], recipe, torch.Generator().manual_seed(k))
        torch.save(net.state_dict(), out / "ckpt" / f"participant-{k}.pt")

    if out.resolve() != HERE:
        shutil.copy(HERE / "models.py", out / "models.py")
    (out / "own-federation.toml").write_text(config_text(name, participants))
    return out / "own-federation.toml"


def config_text(name: str, participants: int) -> str:
    """The dkd-tune config of the federation: paths relative to the config file."""
    lines = [
        f'name = "{name}"',
        "",
        "[data]",
        'dataset = "imagefolder"      # data/train/<class>/*.png, data/test/<class>/*.png',
        'root = "data"',
        "channels = 1",
        "image_size = 28",
        f"mean = [{MEAN}]              # the normalisation the participants were trained with",
        f"std = [{STD}]",
        "",
        "[federation]",
        'partition = "file:partition.json"',
        "",
        "[kd]",
        "epochs = 1",
        "batch_size = 128",
        "eval_points = 4",
        "eval_subset = 1000",
        "eval_batch_size = 500",
    ]
    for k in range(participants):
        arch = architecture(k)
        kwargs = ", ".join(f"{key} = {json.dumps(value)}" for key, value in arch["kwargs"].items())
        lines += [
            "",
            "[[participants]]",
            f'model = "{arch["model"]}"',
            f"kwargs = {{ {kwargs} }}",
            f'checkpoint = "ckpt/participant-{k}.pt"',
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the federation into")
    parser.add_argument("--participants", type=int, default=6)
    parser.add_argument("--train-size", type=int, default=12000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--public-size", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    config = build(
        args.out,
        participants=args.participants,
        train_size=args.train_size,
        test_size=args.test_size,
        public_size=args.public_size,
        epochs=args.epochs,
    )
    print(f"wrote {config} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
