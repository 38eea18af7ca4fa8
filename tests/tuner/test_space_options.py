"""Search space and command-line values: validated field by field, one-line errors."""

from __future__ import annotations

import optuna
import pytest
import torch

from objectives import AGGREGATIONS, DIVERGENCES, TRANSFER_SETS
from tuner import UsageError, parse_devices, parse_pairs, parse_space
from tuner.search.space import DEFAULT_PARAMS


def test_default_space_covers_design_vocabulary() -> None:
    space = parse_space({})
    assert set(space.divergence) == set(DIVERGENCES)
    assert set(space.transfer_set) == set(TRANSFER_SETS)
    assert set(space.aggregation) == set(AGGREGATIONS)
    assert space.position == ("a", "b")
    low, high = space.temperature
    assert low < DEFAULT_PARAMS["temperature"] < high
    assert space.alpha == (0.0, 1.0)
    assert [d["position"] for d in space.defaults()] == ["a", "b"]


def test_temperature_is_log_scale_and_aggregation_only_with_several_teachers() -> None:
    space = parse_space({"transfer_set": ["public", "public+self"]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        params = space.suggest(trial)
        assert ("aggregation" in params) == (params["transfer_set"] == "public+self")
        seen.add(params["transfer_set"])
        study.tell(trial, 0.0)
    assert seen == {"public", "public+self"}
    assert study.trials[0].distributions["temperature"].log


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ({"temprature": [1, 2]}, "[search].temprature"),
        ({"temperature": [0, 2]}, "[search].temperature"),
        ({"temperature": 3}, "[search].temperature"),
        ({"alpha": [0.2, 1.5]}, "[search].alpha"),
        ({"divergence": ["kl", "wasserstein"]}, "wasserstein"),
        ({"divergence": ["js"]}, "must include 'kl'"),
        ({"grid_alpha": [0.5, 2.0]}, "[search].grid_alpha"),
        ({"position": []}, "[search].position"),
    ],
)
def test_bad_search_field_named_in_one_line(table: dict, names: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_space(table, "x.toml")
    assert names in str(err.value)
    assert "\n" not in str(err.value)


def test_pairs() -> None:
    assert parse_pairs("all", 4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert parse_pairs("2-1, 0-3,1-2", 4) == [(0, 3), (1, 2)]
    for bad, says in [
        ("0-", "bad --pairs"),
        ("0-4", "does not exist"),
        ("3-3", "itself"),
        ("a-b", "bad --pairs"),
        ("", "bad --pairs"),
    ]:
        with pytest.raises(UsageError, match=says):
            parse_pairs(bad, 4)


def test_devices() -> None:
    assert parse_devices("cpu") == ["cpu"]
    if torch.cuda.device_count() < 4:
        with pytest.raises(UsageError, match="cuda:3 does not exist"):
            parse_devices("cuda:3")
    with pytest.raises(UsageError, match="unknown device"):
        parse_devices("gpu-please")
