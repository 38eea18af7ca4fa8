"""A tiny two-head federation (3 clients, the complete graph) for the neighbourhood and compare
tests: a module of its own, shared by both test files."""

from __future__ import annotations

from pathlib import Path

from objectives import load_config, prepare_federation

TINY2 = """\
name = "tiny2"
[data]
dataset = "synthetic"
train_size = 600
test_size = 200
[federation]
participants = 3
partition = "dirichlet:0.5"
public_size = 150
min_size = 30
[model]
name = "small-cnn-2head"
[pretrain]
epochs = 2
batch_size = 32
[kd]
batch_size = 64
eval_points = 2
eval_subset = 100
[compare]
seeds = 2
"""


def make_tiny2(root: Path, text: str = TINY2, prepare: bool = True) -> dict:
    """Write the config (and build its bundle) under ``root``."""
    config = root / "tiny2.toml"
    config.write_text(text)
    bundles = root / "bundles"
    if prepare:
        prepare_federation(load_config(config), directory=bundles)
    return {"config": str(config), "bundles": str(bundles), "root": root}
