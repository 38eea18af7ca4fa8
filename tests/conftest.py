"""A small federation of the user's own, built once per session from real files: an imagefolder of
Fashion-MNIST PNGs, a partition file, checkpoints of two architectures trained for a second each
(examples/own-federation/build_federation.py, the example's own builder)."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

# Before torch loads its OpenMP runtime (objectives imports torch), which reads this once: idle
# OpenMP threads sleep instead of spinning. On two cores shared with another test process (xdist)
# or a job, a spinning thread takes the core the other one needs: tests/objectives/test_batched.py
# took 112 s of CPU instead of 9 that way. Set here, it also reaches every process a test starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from objectives.data import FASHION_MNIST_DIR

# A suite started as a background job of a non-interactive shell (`nohup make test &`) inherits
# SIGINT ignored, and every process it starts would too (an ignored signal survives exec): the
# Ctrl-C tests would send SIGINT to children that ignore it. dkd-tune deliberately keeps an
# inherited ignore, so the test side restores Python's default here; children exec'd from now on
# get SIG_DFL, as under an interactive shell (issue 27).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own-federation"


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_federation", EXAMPLE / "build_federation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def own_federation(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The federation's folder, config file and builder module (3 participants: TinyCNN from
    models.py for 0 and 2, the package's small CNN for 1; 1200 training and 400 test images)."""
    if not (FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (make dataset)")
    folder = tmp_path_factory.mktemp("own")
    builder = _builder()
    config = builder.build(
        folder, participants=3, train_size=1200, test_size=400, public_size=300, epochs=1,
        name="own-test",
    )  # fmt: skip
    return {"folder": folder, "config": config, "builder": builder}
