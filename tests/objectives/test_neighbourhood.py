"""The neighbourhood round on a tiny two-head federation: head 1 kept, head 2 and the backbone
trained, the aggregations against a hand computation, and bad arguments refused."""

import math

import pytest
import torch

from objectives import (
    TrialError,
    TrialSpec,
    parse_config,
    run_federation_round,
    run_neighbourhood_round,
    train_neighbourhood_round,
)
from objectives.neighbourhood import round_loss
from objectives.train import accuracies, predict


def _spec(client: int, neighbours: list[int], **kw) -> TrialSpec:
    """A client's round from its neighbours; the mode's default transfer set, ``local``."""
    return TrialSpec(client, tuple(neighbours), **{"transfer_set": "local", **kw})


def test_head1_kept_head2_and_backbone_trained(bundle2):
    points = []
    model, result = train_neighbourhood_round(
        bundle2, _spec(1, [0, 2], temperature=2.0, alpha=0.7, divergence="js",
                       on_eval=points.append)
    )  # fmt: skip
    before = bundle2.states[1]
    after = {k: v.cpu() for k, v in model.state_dict().items()}
    for name in ("head1.weight", "head1.bias"):
        assert torch.equal(after[name], before[name]), name
    for name in ("head2.weight", "backbone.0.weight"):
        assert not torch.allclose(after[name], before[name]), name
    # The reported accuracies are head 2's; head 1's (through the trained backbone) is apart.
    ds = bundle2.dataset
    acc2, local2 = accuracies(predict(model, ds.test_x, head=2), ds.test_y,
                              bundle2.label_distribution[1])  # fmt: skip
    acc1 = accuracies(predict(model, ds.test_x, head=1), ds.test_y, bundle2.label_distribution[1])
    assert result.accuracy_after == pytest.approx(acc2)
    assert result.local_accuracy_after == pytest.approx(local2)
    assert result.head1_accuracy_after == pytest.approx(acc1[0])
    assert result.gain == pytest.approx(acc2 - float(bundle2.accuracy[1]))
    assert result.teachers == (0, 2) and result.student == 1
    assert [p.index for p in points] == [1, 2, 3] and points[-1].final
    assert points[-1].accuracy == pytest.approx(acc2)


def _softmax(z: list[float], t: float) -> list[float]:
    top = max(z)
    e = [math.exp((v - top) / t) for v in z]
    return [v / sum(e) for v in e]


def _kl(q: list[float], p: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(q, p, strict=True) if a > 0)


@pytest.mark.parametrize("transfer_set", ["local", "public"])
@pytest.mark.parametrize("aggregation", ["avg", "sum"])
def test_aggregation_against_a_hand_computation(bundle2, aggregation, transfer_set):
    """α = 1: the step loss is T²·mean over the batch of KL(mean_k q_k ‖ p) (avg) or
    Σ_k KL(q_k ‖ p) (sum), q_k the neighbours' cached soft predictions on the transfer rows."""
    t, client, nbrs = 3.0, 0, [1, 2]
    loss, n = round_loss(
        bundle2, _spec(client, nbrs, temperature=t, alpha=1.0, divergence="kl",
                       aggregation=aggregation, transfer_set=transfer_set),
        batch_size=32, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
    )  # fmt: skip
    rows = [0, 5, n - 1]
    student = torch.tensor([[1.0, -2.0, 0.5] + [0.0] * 7] * 3, dtype=torch.float32)
    student[1, 4] = 3.0
    got = loss(lambda _x: student, torch.tensor(rows)).item()

    part = bundle2.partition
    source = part.participants[client] if transfer_set == "local" else part.public
    per_row = []
    for r, z_s in zip(rows, student.tolist(), strict=True):
        p = _softmax(z_s, t)
        qs = [_softmax(bundle2.train_logits[k, int(source[r])].double().tolist(), t) for k in nbrs]
        if aggregation == "avg":
            mean = [sum(col) / len(qs) for col in zip(*qs, strict=True)]
            per_row.append(_kl(mean, p))
        else:
            per_row.append(sum(_kl(q, p) for q in qs))
    expected = t * t * sum(per_row) / len(per_row)
    assert got == pytest.approx(expected, rel=1e-5)


def test_sum_and_avg_differ_and_sum_of_one_is_avg(bundle2):
    kw = dict(temperature=2.0, alpha=0.8, divergence="sed", seed=3)
    avg = run_neighbourhood_round(bundle2, _spec(0, [1, 2], aggregation="avg", **kw))
    summed = run_neighbourhood_round(bundle2, _spec(0, [1, 2], aggregation="sum", **kw))
    assert avg.accuracy_after != summed.accuracy_after or avg.forgetting != summed.forgetting
    one_avg = run_neighbourhood_round(bundle2, _spec(0, [2], aggregation="avg", **kw))
    one_sum = run_neighbourhood_round(bundle2, _spec(0, [2], aggregation="sum", **kw))
    assert one_avg.accuracy_after == one_sum.accuracy_after
    assert one_avg.local_accuracy_after == one_sum.local_accuracy_after


def test_seed_decides_and_alpha_zero_ignores_the_neighbours(bundle2):
    kw = dict(temperature=1.0, divergence="kl", transfer_set="public")
    m1, _ = train_neighbourhood_round(bundle2, _spec(2, [0, 1], seed=1, **kw))
    m1b, _ = train_neighbourhood_round(bundle2, _spec(2, [0, 1], seed=1, **kw))
    m2, _ = train_neighbourhood_round(bundle2, _spec(2, [0, 1], seed=2, **kw))
    assert torch.equal(m1.head2.weight, m1b.head2.weight)
    assert not torch.equal(m1.head2.weight, m2.head2.weight)
    # α = 0: pure local cross-entropy; which neighbours teach cannot matter.
    z1, _ = train_neighbourhood_round(bundle2, _spec(2, [0], alpha=0.0, seed=1, **kw))
    z2, _ = train_neighbourhood_round(bundle2, _spec(2, [1], alpha=0.0, seed=1, **kw))
    assert torch.equal(z1.head2.weight, z2.head2.weight)


def test_federation_round_gives_every_client_its_neighbours(bundle2, tiny2_raw):
    sets = parse_config({**tiny2_raw, "topology": {"kind": "edges", "edges": [[0, 1], [1, 2]]}})
    specs = [_spec(k, ns, alpha=0.5) for k, ns in enumerate(sets.neighbours)]
    results = run_federation_round(bundle2, specs)
    assert [(r.student, r.teachers) for r in results] == [(0, (1,)), (1, (0, 2)), (2, (1,))]


@pytest.mark.parametrize(
    ("args", "kwargs", "phrase"),
    [
        ((0, [0, 1]), {}, "cannot be its own neighbour"),
        ((0, []), {}, "has no neighbour"),
        ((0, [1, 1]), {}, "name participant 1 twice"),
        ((3, [1]), {}, "client 3 is not a participant"),
        ((0, [5]), {}, "neighbour 5 is not a participant"),
        ((0, [1]), {"aggregation": "max"}, "unknown aggregation 'max'"),
        ((0, [1]), {"transfer_set": "public+self"}, "not 'public+self'"),
        ((0, [1]), {"alpha": -0.1}, "alpha -0.1"),
    ],
)
def test_bad_arguments(bundle2, args, kwargs, phrase):
    with pytest.raises(TrialError) as err:
        run_neighbourhood_round(bundle2, _spec(*args, **kwargs))
    assert phrase in str(err.value) and "\n" not in str(err.value)


def test_one_head_model_is_refused_with_the_fix(tiny_bundle):
    with pytest.raises(TrialError, match='set \\[model\\] name = "small-cnn-2head"'):
        run_neighbourhood_round(tiny_bundle, _spec(0, [1]))
