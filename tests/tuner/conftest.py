"""Shared fixtures: a tiny synthetic federation (built once per session into tmp) and helpers to
run the tuner on real SQLite files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from objectives import load_config, prepare_federation
from tuner import TuneOptions

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

ROOT = Path(__file__).resolve().parents[2]
# pytest 9 imports test files in importlib mode (no sys.path entry for their folder); the test
# modules share small helpers in tuner_helpers.py next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny config file and a bundle folder holding its already-built bundle."""
    root = tmp_path_factory.mktemp("tiny")
    config = root / "tiny.toml"
    config.write_text(TINY)
    bundles = root / "bundles"
    prepare_federation(load_config(config), directory=bundles)
    return {"config": str(config), "bundles": str(bundles), "root": root}


@pytest.fixture
def opts(tiny: dict, tmp_path: Path):
    """A factory of TuneOptions on the tiny federation and a fresh SQLite file in tmp_path."""

    def make(**kw) -> TuneOptions:
        base = dict(
            config=tiny["config"],
            bundles=tiny["bundles"],
            storage=f"sqlite:///{tmp_path / 'tune.db'}",
            pairs="0-1",
            trials=3,
            pruner="none",
            progress="quiet",
        )
        base.update(kw)
        return TuneOptions(**base)

    return make
