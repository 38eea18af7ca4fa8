"""Datasets: the real Fashion-MNIST files, CIFAR-10 in torchvision's layout, missing files."""

import gzip
import pickle

import numpy as np
import pytest
import torch

from objectives.config import DataConfig
from objectives.data import FASHION_MNIST_DIR, _read_idx, load_dataset
from objectives.errors import DataError

REAL = FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz"


@pytest.mark.skipif(not REAL.is_file(), reason="run 'make dataset' to install Fashion-MNIST")
def test_reads_a_slice_of_the_real_fashion_mnist():
    labels = _read_idx(REAL)
    images = _read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (60_000,) and images.shape == (10_000, 28, 28)
    assert np.bincount(labels, minlength=10).tolist() == [6000] * 10  # balanced classes
    # First training label of Fashion-MNIST is 9 (ankle boot), first test label too.
    assert labels[0] == 9 and _read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")[0] == 9
    ds = load_dataset(DataConfig(dataset="fashion-mnist"))
    assert ds.train_x.shape == (60_000, 1, 28, 28) and ds.test_x.dtype == torch.float32
    sample = ds.train_x[:2000]
    assert abs(sample.mean().item()) < 0.1 and abs(sample.std().item() - 1) < 0.1  # standardised
    assert load_dataset(DataConfig(dataset="fashion-mnist")) is ds  # once per process


def test_missing_fashion_mnist_names_files_and_install_command(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(dataset="fashion-mnist", root=str(tmp_path)))
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_torchvision_fashion_mnist_layout(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 12)):
        _write_idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    ds = load_dataset(DataConfig(dataset="fashion-mnist", root=str(tmp_path)))
    assert ds.train_x.shape == (30, 1, 28, 28) and len(ds.test_y) == 12


def test_truncated_idx_is_refused(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([10], dtype=">u4").tobytes() + b"abc")
    with pytest.raises(DataError, match="truncated"):
        _read_idx(path)


def test_cifar10_in_torchvision_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)))
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_y.tolist() == [0, 1, 2, 3] * 5


def test_missing_cifar10_says_where(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)))
