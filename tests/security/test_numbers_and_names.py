"""Adversarial --pairs/--clients items (issue 27): one UsageError line, never a ValueError."""

import pytest

from tuner.errors import UsageError
from tuner.options import parse_clients, parse_pairs


@pytest.mark.parametrize("spec", ["1" * 5000 + "-1", "٠-١", "0-1,2-" + "9" * 5000])
def test_bad_pairs_are_one_usage_line(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_pairs(spec, 4)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["9" * 5000, "١", "0,٢"])
def test_bad_clients_are_one_usage_line(spec: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_clients(spec, 4)
    assert "\n" not in str(err.value)


def test_plain_pairs_and_clients_still_parse() -> None:
    assert parse_pairs("2-0, 1-3", 4) == [(0, 2), (1, 3)]
    assert parse_clients("2,0", 4) == [0, 2]
