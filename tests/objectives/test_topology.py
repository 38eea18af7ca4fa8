"""The clients' graph: neighbour sets of each topology, bad graphs refused in one line, and the
federation hash (which keys prepared bundles) untouched by the graph."""

import json
import tomllib
from pathlib import Path

import pytest

from objectives import ConfigError, apply_overrides, neighbours, parse_config

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def three(**topology) -> dict:
    return {"name": "g", "federation": {"participants": 3}, "topology": topology}


@pytest.mark.parametrize(
    ("kind", "n", "edges", "expected"),
    [
        ("complete", 3, (), ((1, 2), (0, 2), (0, 1))),
        ("complete", 4, (), ((1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2))),
        ("ring", 5, (), ((1, 4), (0, 2), (1, 3), (2, 4), (0, 3))),
        ("ring", 2, (), ((1,), (0,))),
        ("ring", 3, (), ((1, 2), (0, 2), (0, 1))),
        ("edges", 3, ((0, 1), (1, 2)), ((1,), (0, 2), (1,))),
        # Undirected: a reversed or repeated edge adds nothing.
        ("edges", 4, ((0, 1), (1, 0), (2, 3), (3, 2), (0, 1)), ((1,), (0,), (3,), (2,))),
    ],
)
def test_neighbour_sets(kind, n, edges, expected):
    assert neighbours(kind, n, edges) == expected


def test_config_gives_the_neighbours_and_overrides_set_them():
    assert parse_config(three()).neighbours == ((1, 2), (0, 2), (0, 1))
    raw = apply_overrides(three(), ['topology.kind="edges"', "topology.edges=[[2, 0], [0, 1]]"])
    assert parse_config(raw).neighbours == ((1, 2), (0,), (0,))


@pytest.mark.parametrize(
    ("topology", "phrase"),
    [
        ({"kind": "edges", "edges": [[0, 1], [1, 3]]}, "names client 3, which does not exist"),
        ({"kind": "edges", "edges": [[0, 1], [-1, 2]]}, "names client -1, which does not exist"),
        ({"kind": "edges", "edges": [[0, 1], [1, 2], [2, 2]]}, "[2, 2] is a self-loop"),
        ({"kind": "edges", "edges": [[0, 1]]}, "client 2 has no neighbour"),
        ({"kind": "edges", "edges": []}, "client 0 has no neighbour (nor 1, 2)"),
        ({"kind": "complete", "edges": [[0, 1]]}, 'only read with kind = "edges"'),
        ({"kind": "star"}, "[topology].kind = 'star' is invalid"),
        ({"kind": "edges", "edges": [[0]]}, "[0] is not a pair of client numbers"),
        ({"kind": "edges", "edges": [["0", 1]]}, "is not a pair of client numbers"),
        ({"kind": "edges", "edges": [[True, 1]]}, "is not a pair of client numbers"),
        ({"kind": "edges", "edges": "0-1"}, "must be a list of pairs"),
        ({"kidn": "ring"}, "did you mean 'kind'"),
    ],
)
def test_bad_topology_is_one_clear_line(topology, phrase):
    with pytest.raises(ConfigError) as err:
        parse_config(three(**topology), source="g.toml")
    message = str(err.value)
    assert phrase in message
    assert message.startswith("g.toml: ") and "\n" not in message


@pytest.mark.parametrize(
    ("section", "value", "phrase"),
    [
        ("neighbourhood", {"transfer_set": "public+self"}, "[neighbourhood].transfer_set"),
        ("compare", {"seeds": 0}, "[compare].seeds"),
        ("compare", {"alpha": 1.5}, "[compare].alpha"),
        ("compare", {"partitions": ["iid", "dirichlet:0"]}, "bad partition 'dirichlet:0'"),
        ("compare", {"partitions": ["iid", "iid"]}, "lists a partition twice"),
        ("compare", {"partitions": []}, "must be a non-empty list"),
    ],
)
def test_bad_neighbourhood_and_compare_fields(section, value, phrase):
    with pytest.raises(ConfigError) as err:
        parse_config({"name": "g", section: value}, source="g.toml")
    assert phrase in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["fashion-mnist.toml", "cifar10-resnet18.toml"])
def test_graph_and_compare_sections_leave_the_federation_hash_alone(name):
    """Prepared bundles are keyed by the hash: the graph and the compare settings do not change
    pre-training, so adding them must not orphan a bundle."""
    raw = tomllib.loads((STUDIES / name).read_text())
    plain = parse_config(raw)
    extra = dict(
        raw,
        topology={"kind": "ring"},
        neighbourhood={"transfer_set": "public"},
        compare={"temperature": 4.0, "alpha": 0.9, "seeds": 5, "partitions": ["iid"]},
    )
    assert parse_config(extra).federation_hash == plain.federation_hash
    # ...while the federation itself still moves it (the hash is not constant).
    other = dict(raw, federation={**raw["federation"], "participants": 3})
    assert parse_config(other).federation_hash != plain.federation_hash


def test_config_survives_the_round_trip_through_a_study_record():
    """``dkd-tune worker`` rebuilds the config from the JSON a study stores."""
    cfg = parse_config(
        {
            "name": "g",
            "federation": {"participants": 4},
            "topology": {"kind": "edges", "edges": [[0, 1], [1, 2], [2, 3]]},
            "compare": {"partitions": ["iid", "shards:2"], "seeds": 2},
        }
    )
    record = json.loads(json.dumps(cfg.to_dict()))
    record.pop("source")
    again = parse_config(record)
    assert again.topology == cfg.topology
    assert again.neighbours == cfg.neighbours
    assert again.compare == cfg.compare
    assert again.federation_hash == cfg.federation_hash
