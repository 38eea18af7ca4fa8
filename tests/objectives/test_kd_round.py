"""The one KD round loop (objectives.kd_round) behind run_trial and the neighbourhood round: both
train through it, evaluate the head they train at the same schedule and stop on a non-finite
loss; the neighbourhood round's head 1 stays bit-identical. Schedules against integer arithmetic,
accuracies against a plain recomputation from the trained model."""

import dataclasses

import pytest
import torch

from objectives import (
    FederationBundle,
    NonFiniteLoss,
    TrialSpec,
    run_trial,
    train_neighbourhood_round,
)
from objectives import kd_round as kd_round_module
from objectives.evaluation import eval_schedule, eval_subset
from objectives.kd_round import batch_generator, local_batches, round_schedule, step_batches
from objectives.train import predict, predict_heads


def _pair(bundle, **kw):
    return run_trial(bundle, 0, [1, 2], **kw)


def _neighbourhood(bundle, recipe=None, **kw):
    spec = TrialSpec(1, (0, 2), **{"transfer_set": "local", **kw})  # the mode's default set
    return train_neighbourhood_round(bundle, spec, recipe=recipe)[1]


@pytest.fixture(params=["pair", "neighbourhood"])
def round_kind(request, monkeypatch):
    """(bundle, run, trained head, transfer-set size, built models): each round kind with a spy
    that keeps every model the bundle builds (the round trains its own in place)."""
    if request.param == "pair":
        bundle, run, head = request.getfixturevalue("tiny_bundle"), _pair, 1
        n_transfer = len(bundle.partition.public)
    else:
        bundle, run, head = request.getfixturevalue("bundle2"), _neighbourhood, 2
        n_transfer = len(bundle.partition.participants[1])  # its default transfer set: local
    built = []
    original = FederationBundle.model

    def spy(self, participant, device="cpu"):
        built.append(original(self, participant, device))
        return built[-1]

    monkeypatch.setattr(FederationBundle, "model", spy)
    return bundle, run, head, n_transfer, built


def _schedule(total: int, points: int) -> list[int]:
    """The steps of the evaluation points in integer arithmetic: point i at ceil(total·i/k)."""
    k = min(points, total)
    return [-(-total * i // k) for i in range(1, k + 1)]


@pytest.mark.parametrize("total", range(1, 41))
def test_eval_schedule_spreads_points_to_the_end(total):
    for points in range(1, 9):
        schedule = eval_schedule(total, points)
        assert list(schedule) == _schedule(total, points)
        assert list(schedule.values()) == list(range(1, min(points, total) + 1))


@pytest.mark.parametrize("draws", [True, False])
def test_step_batches_draw_in_the_documented_order(tiny_bundle, draws):
    """5 transfer and 3 local items in batches of 2 over 2 epochs: the generator gives the first
    transfer permutation, a local one at step 1, another when that pass is used up (step 3), the
    second epoch's transfer permutation, a local one at step 5; none local when the steps draw
    none. The number of steps is round_schedule's."""
    recipe = dataclasses.replace(tiny_bundle.config.kd, batch_size=2, epochs=2)
    cpu = torch.device("cpu")
    gen = batch_generator(3)
    local = local_batches(3, 2, gen, cpu) if draws else None
    got = list(step_batches(5, local, recipe, gen, cpu))
    ref = torch.Generator().manual_seed(3)
    if draws:
        t1, l1, l2, t2, l3 = (torch.randperm(n, generator=ref) for n in (5, 3, 3, 5, 3))
        transfer = [*t1.split(2), *t2.split(2)]
        locals_ = [*l1.split(2), *l2.split(2), *l3.split(2)][:6]
    else:
        t1, t2 = (torch.randperm(5, generator=ref) for _ in range(2))
        transfer, locals_ = [*t1.split(2), *t2.split(2)], [None] * 6
    assert len(got) == len(transfer) == round_schedule(5, recipe)[0] == 6
    for (idx, lidx), want, want_local in zip(got, transfer, locals_, strict=True):
        assert torch.equal(idx, want)
        assert lidx is None if want_local is None else torch.equal(lidx, want_local)


def test_both_rounds_train_through_the_shared_loop(round_kind, monkeypatch):
    bundle, run, head, _, built = round_kind
    optimised = []
    optimizer = kd_round_module.KDOptimizer

    def spy(params, recipe):
        optimised.append(list(params))
        return optimizer(optimised[-1], recipe)

    monkeypatch.setattr(kd_round_module, "KDOptimizer", spy)
    run(bundle, alpha=0.5, seed=2)
    assert len(optimised) == 1 and len(built) == 1
    model = built[0]
    frozen = {id(p) for p in model.head1.parameters()} if head == 2 else set()
    expected = [p for p in model.parameters() if id(p) not in frozen]
    assert [id(p) for p in optimised[0]] == [id(p) for p in expected]


def test_points_follow_the_schedule_and_measure_the_trained_head(round_kind):
    bundle, run, head, n_transfer, built = round_kind
    recipe = dataclasses.replace(bundle.config.kd, epochs=2, eval_points=4, eval_subset=150)
    subset = eval_subset(bundle, 150)
    test_x, test_y = bundle.dataset.test_x, bundle.dataset.test_y
    hits = bundle.test_logits[0 if head == 1 else 1][subset].argmax(1) == test_y[subset]
    subset_before = 100.0 * hits.float().mean().item()
    points, measured = [], []

    def check(point):
        points.append(point)
        x, y = (test_x, test_y) if point.final else (test_x[subset], test_y[subset])
        logits = predict(built[0], x, recipe.eval_batch_size, head=head)
        measured.append(100.0 * (logits.argmax(1) == y).float().mean().item())

    result = run(bundle, alpha=0.6, temperature=2.0, seed=4, recipe=recipe, on_eval=check)
    total = 2 * -(-n_transfer // recipe.batch_size)
    assert result.steps == total
    assert [p.step for p in points] == _schedule(total, 4)
    assert [(p.index, p.points, p.final) for p in points] == [
        (1, 4, False), (2, 4, False), (3, 4, False), (4, 4, True),
    ]  # fmt: skip
    assert [p.accuracy for p in points] == pytest.approx(measured)
    gains = [a - subset_before for a in measured[:-1]]
    assert [p.gain for p in points[:-1]] == pytest.approx(gains)
    assert points[-1].accuracy == pytest.approx(result.accuracy_after)
    assert points[-1].gain == pytest.approx(result.gain)


def test_non_finite_loss_stops_the_round_at_the_first_point(round_kind, monkeypatch):
    """A NaN in the backbone makes the loss NaN from the first step: the round must stop at the
    first evaluation point, before anything is handed to on_eval."""
    bundle, run, _, n_transfer, _ = round_kind
    build = FederationBundle.model

    def poisoned(self, participant, device="cpu"):
        model = build(self, participant, device)
        with torch.no_grad():
            model.backbone[0].weight[0, 0, 0, 0] = float("nan")
        return model

    monkeypatch.setattr(FederationBundle, "model", poisoned)
    points = []
    with pytest.raises(NonFiniteLoss, match="NaN or infinite") as err:
        run(bundle, temperature=2.0, alpha=0.5, on_eval=points.append)
    total = -(-n_transfer // bundle.config.kd.batch_size)
    first = _schedule(total, bundle.config.kd.eval_points)[0]
    assert f"by step {first} of {total} (T=2.0, alpha=0.5, kl" in str(err.value)
    assert points == []


@pytest.mark.parametrize(("alpha", "transfer_set"), [(0.0, "local"), (1.0, "public")])
def test_neighbourhood_head1_stays_bit_identical(bundle2, alpha, transfer_set):
    model, result = train_neighbourhood_round(
        bundle2, TrialSpec(2, (0, 1), alpha=alpha, transfer_set=transfer_set, temperature=3.0,
                           seed=5)
    )  # fmt: skip
    before = bundle2.states[2]
    assert torch.equal(model.head1.weight.cpu(), before["head1.weight"])
    assert torch.equal(model.head1.bias.cpu(), before["head1.bias"])
    assert not torch.equal(model.backbone[0].weight.cpu(), before["backbone.0.weight"])
    ds, batch = bundle2.dataset, bundle2.config.kd.eval_batch_size
    for head, reported in ((1, result.head1_accuracy_after), (2, result.accuracy_after)):
        logits = predict(model, ds.test_x, batch, head=head)
        assert reported == pytest.approx(100.0 * (logits.argmax(1) == ds.test_y).float().mean())


def test_predict_heads_is_each_head_from_one_backbone_pass(bundle2, tiny_bundle):
    model, x = bundle2.model(0), bundle2.dataset.test_x
    two, one = predict_heads(model, x, 128, (2, 1))
    assert model.training  # put back in training mode
    model.eval()
    with torch.no_grad():
        for got, head in ((two, 2), (one, 1)):
            expected = torch.cat([model(xb, head=head) for xb in x.split(128)])
            assert torch.equal(got, expected), head
    assert not torch.equal(one, two)
    with pytest.raises(ValueError, match="one head"):
        predict_heads(tiny_bundle.model(0), x, 128, (2,))
