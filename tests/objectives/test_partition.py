"""Partitions: deterministic, disjoint, covering, large enough, and skewed when asked."""

import pytest
import torch

from objectives.config import FederationConfig
from objectives.errors import FederationError
from objectives.partition import make_partition


@pytest.fixture(scope="module")
def labels():
    return torch.randint(0, 10, (20_000,), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"])
def test_disjoint_covering_deterministic(labels, spec):
    cfg = FederationConfig(participants=10, partition=spec, public_size=2000, min_size=100)
    part = make_partition(labels, cfg, seed=3)
    pieces = [part.public, *part.participants]
    everything = torch.cat(pieces)
    assert len(everything) == len(labels)  # no index twice ...
    assert torch.equal(everything.sort().values, torch.arange(len(labels)))  # ... and all covered
    assert len(part.public) == 2000
    assert min(len(p) for p in part.participants) >= 100
    again = make_partition(labels, cfg, seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(pieces, [again.public, *again.participants], strict=True)
    )
    other = make_partition(labels, cfg, seed=4)
    assert not torch.equal(part.participants[0], other.participants[0])


def _mean_top_share(labels, spec):
    cfg = FederationConfig(participants=10, partition=spec, public_size=2000, min_size=50)
    dist = make_partition(labels, cfg, seed=0).label_distribution(labels, 10)
    return dist.max(1).values.mean().item()


def test_dirichlet_skew_shows_in_label_histograms(labels):
    iid = _mean_top_share(labels, "iid")
    mild = _mean_top_share(labels, "dirichlet:1.0")
    strong = _mean_top_share(labels, "dirichlet:0.1")
    assert iid < 0.13  # ten balanced classes: about 0.1 each
    assert iid < mild < strong
    assert strong > 0.5


def test_shards_give_k_labels(labels):
    cfg = FederationConfig(participants=10, partition="shards:2", public_size=2000, min_size=50)
    part = make_partition(labels, cfg, seed=0)
    for indices in part.participants:
        assert len(labels[indices].unique()) <= 4  # two shards, each spanning at most two labels


def test_too_small_is_a_clear_error(labels):
    # Twelve participants, ten classes, near-one-hot shares: some participant always gets ~nothing.
    cfg = FederationConfig(
        participants=12, partition="dirichlet:0.01", public_size=2000, min_size=1000
    )
    with pytest.raises(FederationError, match="min_size"):
        make_partition(labels, cfg, seed=0)
    cfg = FederationConfig(participants=10, partition="iid", public_size=19_500, min_size=100)
    with pytest.raises(FederationError, match="public_size"):
        make_partition(labels, cfg, seed=0)
