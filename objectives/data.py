"""Datasets as normalised tensors, loaded once per process.

Fashion-MNIST comes from the IDX files of Debian's ``dataset-fashion-mnist`` (or torchvision's
``FashionMNIST/raw`` layout), CIFAR-10 from torchvision's ``cifar-10-batches-py`` layout, and
``synthetic`` is generated (class prototypes plus noise) for tests. The user's own data comes as
an ``imagefolder`` (``train/<class>/...``, ``test/<class>/...``, read in torchvision's ImageFolder
order), an ``npz`` file, or a ``torchvision:<ClassName>`` dataset; it is standardised with the
config's ``mean``/``std`` (the participants' normalisation), or with the training split's own
statistics when the config gives none. torchvision's download runs only when the config asks for
it. Trials never touch files: they index these tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import TORCHVISION_PREFIX, DataConfig
from .errors import DataError
from .sources import torchvision_split

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
    note: str = ""  # what a user should know about how the data was read (said by `prepare`)

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


def _unit(images: np.ndarray) -> Tensor:
    """uint8 [n, c, h, w] → float32 in [0, 1]; float images are taken as they are."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    return x.div_(255.0) if images.dtype == np.uint8 else x


def _standardise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Images → float32 standardised per channel with ``mean``/``std`` (of [0, 1] images)."""
    m, s = (torch.tensor(v).view(1, -1, 1, 1) for v in (mean, std))
    x = (_unit(images) - m).div_(s)
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


def fashion_mnist_arrays(root: Path = FASHION_MNIST_DIR) -> dict[str, np.ndarray]:
    """Fashion-MNIST's raw arrays (uint8 images [n, 28, 28], labels [n]) from its IDX files:
    train_x, train_y, test_x, test_y (e.g. to build a federation of one's own from it)."""
    return {k: _read_idx(p) for k, p in _find_fashion_mnist(Path(root)).items()}


def _load_fashion_mnist(cfg: DataConfig) -> Dataset:
    root = Path(cfg.root) if cfg.root else FASHION_MNIST_DIR
    if cfg.download:
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), download=True)
    arrays = fashion_mnist_arrays(root)
    return Dataset(
        name="fashion-mnist",
        train_x=_standardise(arrays["train_x"][:, None], *_STATS["fashion-mnist"]),
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=_standardise(arrays["test_x"][:, None], *_STATS["fashion-mnist"]),
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
                batch = _load_cifar_batch(f, folder / name)
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = read(CIFAR10_FILES[:5])
    test_x, test_y = read(CIFAR10_FILES[5:])
    return Dataset(
        name="cifar10",
        train_x=_standardise(train_x, *_STATS["cifar10"]),
        train_y=torch.from_numpy(train_y),
        test_x=_standardise(test_x, *_STATS["cifar10"]),
        test_y=torch.from_numpy(test_y),
        classes=10,
    )


# The globals a CIFAR-10 python batch may name (numpy 1 and 2 spell the array rebuild differently;
# protocol 2 written by Python 3 encodes bytes through _codecs.encode). Nothing else: a batch file
# from a data folder someone handed over must not run code (issue 27, docs/design.md §10).
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, bytes, str, ints and numpy arrays: what a CIFAR batch holds."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def _load_cifar_batch(f: object, path: Path) -> dict:
    """One CIFAR-10 batch file through the restricted unpickler; anything else is one DataError."""
    try:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(
            f"{path} is not a CIFAR-10 batch file (it names {e}, which a batch never holds); "
            "replace it with the file from the official cifar-10-python.tar.gz"
        ) from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(
            f"{path} is not a CIFAR-10 batch file (no data and labels); replace it with the file "
            "from the official cifar-10-python.tar.gz"
        )
    return batch


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


# -- the user's own data -------------------------------------------------------------------------


def _nchw(x: np.ndarray, channels: int, where: str) -> np.ndarray:
    """Images as [n, c, h, w]: NCHW and NHWC are told apart by where ``channels`` stands; a
    [n, h, w] array is one channel. uint8 (0-255) or float (taken as is, e.g. 0-1)."""
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where} has dtype {x.dtype}: store images as uint8 (0-255) or float")
    if x.ndim == 3 and channels == 1:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] == channels:
        return x
    if x.ndim == 4 and x.shape[3] == channels:
        return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"{where} has shape {list(x.shape)}, not [n, {channels}, h, w] or [n, h, w, {channels}]: "
        "store images NCHW or NHWC, or set [data].channels to theirs"
    )


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Class labels 0..C-1 as int64, one per image."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise DataError(
            f"{where} must hold {n} integer class labels >= 0 (one per image), got "
            f"{y.dtype} of shape {list(y.shape)}"
        )
    return y.astype(np.int64)


def _check_shape(x: np.ndarray, cfg: DataConfig, where: str) -> None:
    """The images must be what the config says the participants take."""
    h, w = x.shape[2:]
    if (h, w) != (cfg.image_size, cfg.image_size):
        raise DataError(
            f"{where}: images are {h}x{w} but [data].image_size = {cfg.image_size}: set "
            f"image_size = {h}" + ("" if h == w else " (and make the images square)")
        )


def _read_images(paths: list[str], folder: Path) -> list[np.ndarray]:
    """Decode image files to [c, h, w] uint8 arrays (Pillow, a few threads: decoding releases
    the GIL). Palette and 1-bit images are expanded to the channels they show."""
    from PIL import Image

    def read(path: str) -> np.ndarray:
        with Image.open(path) as img:
            if img.mode in ("1", "P"):
                img = img.convert(
                    "L" if img.mode == "1" else "RGBA" if "transparency" in img.info else "RGB"
                )
            a = np.asarray(img)
        if a.dtype != np.uint8:
            raise DataError(
                f"{Path(path).relative_to(folder)} is a {a.dtype} image (mode {img.mode}): "
                "save 8-bit images"
            )
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(read, paths))


def _image_split(
    root: Path, split: str, classes: list[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split of an imagefolder in torchvision ImageFolder's order (classes in sorted folder
    order, images in sorted path order within a class); all images of one size and channels."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    folder = root / split
    if not folder.is_dir():
        raise DataError(
            f"imagefolder {root} has no {split}/ folder: put the images in "
            f"{folder}/<class>/<image>.png (train/ and test/)"
        )
    try:
        names, class_to_idx = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(
            f"imagefolder {folder}: {exc}: put the images in {folder}/<class>/"
        ) from None
    if classes is not None and names != classes:
        raise DataError(
            f"imagefolder {root}: test/ has classes {names}, train/ has {classes}: give both "
            "splits the same class folders"
        )
    if not samples:
        raise DataError(f"imagefolder {folder} holds no images: put them in {folder}/<class>/")
    images = _read_images([p for p, _ in samples], root)
    first, first_path = images[0].shape, Path(samples[0][0]).relative_to(root)
    for (path, _), img in zip(samples, images, strict=True):
        if img.shape != first:
            raise DataError(
                f"imagefolder {root}: {Path(path).relative_to(root)} is {img.shape[1]}x"
                f"{img.shape[2]} with {img.shape[0]} channel(s), {first_path} is "
                f"{first[1]}x{first[2]} with {first[0]}: give every image one size and one "
                "channel count"
            )
    return np.stack(images), np.array([c for _, c in samples], dtype=np.int64), names


def _arrays_imagefolder(cfg: DataConfig) -> tuple[dict[str, np.ndarray], int]:
    root = Path(cfg.root)
    train_x, train_y, classes = _image_split(root, "train", None)
    test_x, test_y, _ = _image_split(root, "test", classes)
    if train_x.shape[1] != cfg.channels or test_x.shape[1:] != train_x.shape[1:]:
        got = train_x.shape[1] if train_x.shape[1] != cfg.channels else test_x.shape[1]
        raise DataError(
            f"imagefolder {root}: images have {got} channel(s), train and test "
            f"{train_x.shape[1:]} / {test_x.shape[1:]}, [data].channels = {cfg.channels}: set "
            "channels to the images' and give both splits one shape"
        )
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    return arrays, len(classes)


def _arrays_npz(cfg: DataConfig) -> tuple[dict[str, np.ndarray], int]:
    path = Path(cfg.root)
    try:
        # allow_pickle=False: an npz file holds arrays only, never objects that run code.
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("train_x", "train_y", "test_x", "test_y") if k not in f]
            if missing:
                raise DataError(
                    f"npz file {path} lacks {', '.join(missing)} (has {', '.join(f.files)}): "
                    "save train_x, train_y, test_x, test_y"
                )
            raw = {k: f[k] for k in ("train_x", "train_y", "test_x", "test_y")}
    except (OSError, ValueError) as exc:
        raise DataError(
            f"npz file {path} cannot be read ({exc.__class__.__name__}: {exc}): set [data].root "
            "to an .npz file saved with numpy.savez (no pickled objects)"
        ) from None
    arrays = {}
    for split in ("train", "test"):
        x = _nchw(raw[f"{split}_x"], cfg.channels, f"{path}: {split}_x")
        arrays[f"{split}_x"] = x
        arrays[f"{split}_y"] = _labels(raw[f"{split}_y"], len(x), f"{path}: {split}_y")
    return arrays, int(max(arrays["train_y"].max(), arrays["test_y"].max())) + 1


def _arrays_torchvision(cfg: DataConfig) -> tuple[dict[str, np.ndarray], int]:
    name = cfg.dataset[len(TORCHVISION_PREFIX) :]
    arrays, classes = {}, 0
    for split, train in (("train", True), ("test", False)):
        ds = torchvision_split(name, cfg.root, train, cfg.download)
        where = f"torchvision:{name} ({split})"
        data = getattr(ds, "data", None)
        labels = getattr(ds, "targets", getattr(ds, "labels", None))
        if data is None or labels is None:  # a class without arrays: one item at a time
            items = [ds[i] for i in range(len(ds))]
            data = np.stack([np.asarray(img) for img, _ in items])
            labels = [label for _, label in items]
        x = _nchw(np.asarray(data), cfg.channels, where)
        arrays[f"{split}_x"] = x
        arrays[f"{split}_y"] = _labels(np.asarray(labels), len(x), f"{where} labels")
        classes = max(classes, len(getattr(ds, "classes", ())))
    found = int(max(arrays["train_y"].max(), arrays["test_y"].max())) + 1
    return arrays, max(classes, found)


def _load_user(cfg: DataConfig) -> Dataset:
    """The user's data as tensors, standardised with the participants' normalisation."""
    read = {"imagefolder": _arrays_imagefolder, "npz": _arrays_npz}.get(
        cfg.dataset, _arrays_torchvision
    )
    arrays, classes = read(cfg)
    for split in ("train", "test"):
        _check_shape(arrays[f"{split}_x"], cfg, f"{cfg.dataset} {cfg.root} ({split})")
    note = ""
    mean, std = cfg.mean, cfg.std
    if not mean:  # the training split's own statistics, and the user is told
        x = _unit(arrays["train_x"]).double()
        mean = tuple(x.mean((0, 2, 3)).tolist())
        std = tuple(x.std((0, 2, 3)).clamp(min=1e-6).tolist())
        note = (
            f"normalisation computed from the training split: mean "
            f"{[round(v, 4) for v in mean]}, std {[round(v, 4) for v in std]} (set [data].mean "
            "and .std if the participants were trained with another)"
        )
    return Dataset(
        name=cfg.dataset,
        train_x=_standardise(arrays["train_x"], mean, std),
        train_y=torch.from_numpy(arrays["train_y"]),
        test_x=_standardise(arrays["test_x"], mean, std),
        test_y=torch.from_numpy(arrays["test_y"]),
        classes=classes,
        note=note,
    )


_CACHE: dict[tuple, Dataset] = {}


def load_dataset(cfg: DataConfig) -> Dataset:
    """The dataset a config names, read from disk at most once per process."""
    builtin = cfg.dataset in ("fashion-mnist", "cifar10")
    key = (cfg.dataset, cfg.root) if builtin else (cfg,)
    if key not in _CACHE:
        loader = {
            "fashion-mnist": _load_fashion_mnist,
            "cifar10": _load_cifar10,
            "synthetic": make_synthetic,
        }.get(cfg.dataset, _load_user)
        _CACHE[key] = loader(cfg)
    return _CACHE[key]
