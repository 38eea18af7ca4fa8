"""A tiny synthetic federation, and its two-head twin for the neighbourhood round, each built once
per test session (about a second each on a CPU)."""

import pytest

from objectives import parse_config, prepare_federation

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"dataset": "synthetic", "train_size": 1200, "test_size": 400},
    "federation": {
        "participants": 3,
        "partition": "dirichlet:0.5",
        "public_size": 300,
        "min_size": 50,
    },
    "pretrain": {"epochs": 3, "batch_size": 32},
    "kd": {"batch_size": 32, "eval_points": 3, "eval_subset": 200},
}
TINY2 = {**TINY, "name": "tiny2", "model": {"name": "small-cnn-2head"}}


@pytest.fixture(scope="session")
def tiny_raw():
    """The raw config dict, for tests that derive a changed federation from it."""
    return TINY


@pytest.fixture(scope="session")
def tiny_config():
    return parse_config(TINY, source="tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_config, tmp_path_factory):
    return prepare_federation(tiny_config, tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def tiny2_raw():
    return TINY2


@pytest.fixture(scope="session")
def bundle2(tmp_path_factory):
    """The tiny federation with two-head models (the neighbourhood round's)."""
    return prepare_federation(parse_config(TINY2, "tiny2"), tmp_path_factory.mktemp("b2"))
