"""Session fixtures every folder shares, each built once per session (once per xdist worker): a
small federation of the user's own from real files (an imagefolder of Fashion-MNIST PNGs, a
partition file, checkpoints of two architectures trained for a second each, by
examples/own-federation/build_federation.py, the example's own builder); the tiny synthetic
federation and a finished run on it (tests/tuner and tests/security both read it: one copy)."""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
from pathlib import Path

# Before torch loads its OpenMP runtime (objectives imports torch), which reads this once: idle
# OpenMP threads sleep instead of spinning. On two cores shared with another test process (xdist)
# or a job, a spinning thread takes the core the other one needs: tests/objectives/test_batched.py
# took 112 s of CPU instead of 9 that way. Set here, it also reaches every process a test starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under xdist each test process gets its share of the cores (tuner.options.cpu_cores reads the
# same variable, so a run a test starts splits that share among its workers): two processes of
# two threads each on two cores only trade the cores back and forth (10 % more CPU measured).
_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _PROCESSES > 1:
    _SHARE = max(1, len(os.sched_getaffinity(0)) // _PROCESSES)
    os.environ.setdefault("OMP_NUM_THREADS", str(_SHARE))

import pytest  # noqa: E402 (after the environment above)

from objectives import load_config, prepare_federation  # noqa: E402
from objectives.data import FASHION_MNIST_DIR  # noqa: E402
from tuner import TuneOptions, tune  # noqa: E402

# A suite started as a background job of a non-interactive shell (`nohup make test &`) inherits
# SIGINT ignored, and every process it starts would too (an ignored signal survives exec): the
# Ctrl-C tests would send SIGINT to children that ignore it. dkd-tune deliberately keeps an
# inherited ignore, so the test side restores Python's default here; children exec'd from now on
# get SIG_DFL, as under an interactive shell (issue 27).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TINY = """\
name = "tiny"
[data]
dataset = "synthetic"
train_size = 1200
test_size = 400
[federation]
participants = 4
public_size = 300
min_size = 50
[pretrain]
epochs = 2
batch_size = 32
[kd]
batch_size = 64
eval_points = 3
"""

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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny config file and a bundle folder holding its already-built bundle."""
    root = tmp_path_factory.mktemp("tiny")
    config = root / "tiny.toml"
    config.write_text(TINY)
    bundles = root / "bundles"
    prepare_federation(load_config(config), directory=bundles)
    return {"config": str(config), "bundles": str(bundles), "root": root}


@pytest.fixture(scope="session")
def tuned(tiny: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished run as a user gets it: ``dkd-tune --pairs 0-1,1-2 --trials 4`` on the tiny
    federation with every other default on (TPE, the quartile pruner, confirmation with 3 seeds).
    Read it through :func:`tuned_copy` when a test may write."""
    folder = tmp_path_factory.mktemp("tuned")
    url = f"sqlite:///{folder / 'run.db'}"
    opts = TuneOptions(config=tiny["config"], bundles=tiny["bundles"], storage=url,
                       pairs="0-1,1-2", trials=4, progress="quiet")  # fmt: skip
    tune(opts, say=lambda _m: None)
    return {"url": url, "path": folder / "run.db", "studies": ["tiny/0-1", "tiny/1-2"], **tiny}


@pytest.fixture
def tuned_copy(tuned: dict, tmp_path: Path) -> dict:
    """A copy of the :func:`tuned` run's database in this test's folder, through SQLite's backup
    (the file alone may lack commits still in its write-ahead log)."""
    path = tmp_path / "run.db"
    src, dst = sqlite3.connect(tuned["path"]), sqlite3.connect(path)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return {**tuned, "url": f"sqlite:///{path}", "path": path}
