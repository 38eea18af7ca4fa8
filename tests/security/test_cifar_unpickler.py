"""CIFAR-10 batch files from a data folder never run code (issue 27): a restricted unpickler."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from objectives.data import _load_cifar_batch
from objectives.errors import DataError


class _Payload:
    """Unpickling this calls os.system: what a hostile batch file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_batch_with_reduce_payload_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}, protocol=2))
    with open(path, "rb") as f, pytest.raises(DataError) as err:
        _load_cifar_batch(f, path)
    assert not marker.exists()
    assert "\n" not in str(err.value) and "system" in str(err.value)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_genuine_small_batch_loads(tmp_path: Path, protocol: int) -> None:
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    path = tmp_path / "data_batch_1"
    batch = {b"batch_label": b"x", b"labels": [3, 7], b"data": data, b"filenames": [b"a.png"]}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    with open(path, "rb") as f:
        loaded = _load_cifar_batch(f, path)
    assert loaded[b"labels"] == [3, 7] and np.array_equal(loaded[b"data"], data)
