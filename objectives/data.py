"""Datasets as normalised tensors, loaded once per process.

Fashion-MNIST comes from the IDX files of Debian's ``dataset-fashion-mnist`` (or torchvision's
``FashionMNIST/raw`` layout), CIFAR-10 from torchvision's ``cifar-10-batches-py`` layout, and
``synthetic`` is generated (class prototypes plus noise) for tests. torchvision's download runs only
when the config asks for it. Trials never touch files: they index these tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import DataConfig
from .errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
CIFAR10_DIR = Path("data")
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

# Per-channel mean and std of the training split, so inputs are roughly standardised.
_STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclass(frozen=True)
class Dataset:
    """A labelled train split (partitioned among participants) and a global test split."""

    name: str
    train_x: Tensor  # float32 [n, channels, size, size], standardised, channels_last (see models)
    train_y: Tensor  # int64 [n]
    test_x: Tensor
    test_y: Tensor
    classes: int

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def fingerprint(self) -> str:
        """Cheap content check (shapes and labels) so a bundle is never paired with other data."""
        h = hashlib.sha256()
        for t in (self.train_y, self.test_y):
            h.update(t.numpy().tobytes())
        h.update(repr((tuple(self.train_x.shape), tuple(self.test_x.shape))).encode())
        return h.hexdigest()[:16]


def _standardise(images: np.ndarray, name: str) -> Tensor:
    """uint8 [n, c, h, w] → float32 standardised with the dataset's channel statistics."""
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in _STATS[name])
    x = (torch.from_numpy(images).float().div_(255.0) - mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or plain): big-endian dims after a magic that gives their count."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        blob = f.read()
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes; reinstall the dataset")
    ndim = blob[3]
    dims = np.frombuffer(blob, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(blob, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({data.size} of {int(np.prod(dims))} bytes)")
    return data.reshape(dims).copy()  # frombuffer is read-only; torch wants writable memory


def _find_fashion_mnist(root: Path) -> dict[str, Path]:
    """The four IDX files in ``root`` itself or in torchvision's ``root/FashionMNIST/raw``."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in FASHION_MNIST_FILES.items():
            for candidate in (folder / f"{stem}.gz", folder / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FASHION_MNIST_FILES):
            return found
    expected = ", ".join(f"{s}.gz" for s in FASHION_MNIST_FILES.values())
    raise DataError(
        f"Fashion-MNIST not found: expected {expected} in {root}; install them with "
        "'sudo apt-get install dataset-fashion-mnist', or set [data].root to a folder that "
        "holds them, "
        "or [data].download = true on a machine with internet"
    )


def _load_fashion_mnist(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root) if cfg.root else FASHION_MNIST_DIR
    if cfg.download:
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), download=True)
    files = _find_fashion_mnist(root)
    arrays = {k: _read_idx(p) for k, p in files.items()}
    return Dataset(
        name="fashion-mnist",
        train_x=_standardise(arrays["train_x"][:, None], "fashion-mnist"),
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=_standardise(arrays["test_x"][:, None], "fashion-mnist"),
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        classes=10,
    )


def _load_cifar10(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root) if cfg.root else CIFAR10_DIR
    if cfg.download:
        import torchvision

        torchvision.datasets.CIFAR10(str(root), download=True)
    folder = root / "cifar-10-batches-py"
    missing = [name for name in CIFAR10_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found: expected {', '.join(CIFAR10_FILES)} in {folder} "
            "(torchvision's layout); unpack cifar-10-python.tar.gz into "
            f"{root}, or set [data].root to the folder that holds cifar-10-batches-py, "
            "or [data].download = true on a machine with internet"
        )

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = read(CIFAR10_FILES[:5])
    test_x, test_y = read(CIFAR10_FILES[5:])
    return Dataset(
        name="cifar10",
        train_x=_standardise(train_x, "cifar10"),
        train_y=torch.from_numpy(train_y),
        test_x=_standardise(test_x, "cifar10"),
        test_y=torch.from_numpy(test_y),
        classes=10,
    )


def make_synthetic(cfg: DataConfig) -> Dataset:
    """Learnable toy images: a fixed random prototype per class plus noise (fixed seed)."""
    gen = torch.Generator().manual_seed(12345)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    prototypes = torch.randn(cfg.classes, *shape, generator=gen)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, cfg.classes, (n,), generator=gen)
        x = prototypes[y] + 1.5 * torch.randn(n, *shape, generator=gen)
        return x.contiguous(memory_format=torch.channels_last), y

    train_x, train_y = draw(cfg.train_size)
    test_x, test_y = draw(cfg.test_size)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, cfg.classes)


_CACHE: dict[tuple, Dataset] = {}


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset a config names, read from disk at most once per process."""
    key = (cfg.dataset, cfg.root) if cfg.dataset != "synthetic" else (cfg,)
    if key not in _CACHE:
        loader = {
            "fashion-mnist": _load_fashion_mnist,
            "cifar10": _load_cifar10,
            "synthetic": make_synthetic,
        }[cfg.dataset]
        _CACHE[key] = loader(cfg)
    return _CACHE[key]
