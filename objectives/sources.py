"""Content digests of the files a config names (checkpoints, model files, partition file, data).

The federation hash of a config that brings its own participants or data covers what those files
hold, not where they lie: a changed checkpoint is a new federation, a copy of the same files in
another folder (another machine) is the same one. Each file is hashed at most once per process
while its size and modification time stay the same.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import DataError

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; raises FileNotFoundError/IsADirectoryError as open does."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def tree_sha256(root: str | Path, extensions: tuple[str, ...] | None = None) -> str:
    """SHA-256 over every file under ``root`` (relative path and content, in sorted path order),
    optionally only the files whose name ends with one of ``extensions`` (case-insensitive)."""
    root = Path(root)
    h = hashlib.sha256()
    for dirpath, dirnames, files in os.walk(root, followlinks=True):
        dirnames.sort()  # os.walk visits in this order: a sorted, reproducible walk
        for name in sorted(files):
            if extensions is not None and not name.lower().endswith(extensions):
                continue
            path = Path(dirpath) / name
            h.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def image_tree_sha256(root: str | Path) -> str:
    """An imagefolder's digest: the images (the extensions torchvision's ImageFolder reads)."""
    # Imported here: torchvision costs ~2 s of import (it pulls in torch._dynamo), and every
    # process of dkd-tune (CLI, workers) imports this module while few read image folders.
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tree_sha256(root, tuple(IMG_EXTENSIONS))


def torchvision_split(name: str, root: str | Path, train: bool, download: bool):
    """One split of ``torchvision.datasets.<name>``: with ``train=`` where the class takes it,
    else ``split="train"/"test"`` (SVHN, STL10, ...). Raises DataError with what to fix."""
    import inspect

    import torchvision

    cls = getattr(torchvision.datasets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torchvision.datasets.VisionDataset)):
        known = [n for n in dir(torchvision.datasets) if n[0].isupper()]
        raise DataError(
            f"torchvision has no dataset class {name!r}: write torchvision:<ClassName> with one "
            f"of {', '.join(sorted(known)[:12])}, ..."
        )
    params = inspect.signature(cls).parameters
    if "train" in params:
        split = {"train": train}
    elif "split" in params:
        split = {"split": "train" if train else "test"}
    else:
        raise DataError(
            f"torchvision:{name} has neither a train= nor a split= argument: save its train and "
            'test splits as an npz file and use dataset = "npz"'
        )
    try:
        return cls(str(root), download=download, **split)
    except (RuntimeError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise DataError(
            f"torchvision:{name} cannot be read from {root} ({first}): set [data].root to the "
            "folder that holds it, or [data].download = true on a machine with internet"
        ) from None


def torchvision_sha256(name: str, root: str | Path, download: bool) -> str:
    """Digest of a torchvision dataset's files under ``root``, downloaded first if asked (so the
    digest is the same before and after the download)."""
    if download:
        for train in (True, False):
            torchvision_split(name, root, train, download=True)
    if not Path(root).is_dir():
        raise DataError(
            f"torchvision:{name}: folder {root} not found: set [data].root to the folder that "
            "holds the dataset, or [data].download = true on a machine with internet"
        )
    return tree_sha256(root)
