"""The one-round KD trial on a tiny federation: consistent, reproducible, exact in its loss."""

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from objectives import NonFiniteLoss, TrialError, run_trial
from objectives.divergences import get_divergence, kd_term, teacher_target
from objectives.kd_round import StepLoss


@pytest.mark.parametrize(
    ("transfer_set", "aggregation"),
    list(itertools.product(["public", "public+self", "local"], ["avg", "sum"])),
)
def test_numbers_are_consistent(tiny_bundle, transfer_set, aggregation):
    points = []
    r = run_trial(
        tiny_bundle, 0, [1, 2], temperature=2.0, alpha=0.6, divergence="js",
        transfer_set=transfer_set, aggregation=aggregation, seed=1, on_eval=points.append,
    )  # fmt: skip
    assert r.accuracy_before == pytest.approx(float(tiny_bundle.accuracy[0]))
    assert r.local_accuracy_before == pytest.approx(float(tiny_bundle.local_accuracy[0]))
    assert r.gain == pytest.approx(r.accuracy_after - r.accuracy_before)
    assert r.forgetting == pytest.approx(r.local_accuracy_before - r.local_accuracy_after)
    assert (
        r.accuracy_after != r.accuracy_before or r.local_accuracy_after != r.local_accuracy_before
    )
    assert [p.index for p in points] == [1, 2, 3] and [p.final for p in points] == [
        False,
        False,
        True,
    ]
    assert points[-1].gain == pytest.approx(r.gain) and points[-1].step == r.steps
    n_transfer = len(tiny_bundle.partition.participants[0]) if transfer_set == "local" else 300
    assert r.steps == -(-n_transfer // tiny_bundle.config.kd.batch_size)
    assert r.seconds > 0 and r.device == "cpu"


def test_same_seed_same_result_other_seed_differs(tiny_bundle):
    args = dict(temperature=3.0, alpha=0.5, divergence="sed", transfer_set="public+self")
    first = run_trial(tiny_bundle, 1, [0], seed=7, **args)
    second = run_trial(tiny_bundle, 1, [0], seed=7, **args)
    assert dataclasses.replace(first, seconds=0) == dataclasses.replace(second, seconds=0)
    third = run_trial(tiny_bundle, 1, [0], seed=8, **args)
    assert (third.accuracy_after, third.local_accuracy_after) != (
        first.accuracy_after,
        first.local_accuracy_after,
    )


def test_teachers_come_from_the_cache(tiny_bundle, monkeypatch):
    built = []
    original = type(tiny_bundle).model

    def spy(self, participant, device="cpu"):
        built.append(participant)
        return original(self, participant, device)

    monkeypatch.setattr(type(tiny_bundle), "model", spy)
    run_trial(tiny_bundle, 2, [0, 1], transfer_set="public+self")
    assert built == [2]  # only the student is ever instantiated: no teacher forward passes


def _loss_and_grad(tiny_bundle, *, alpha, y_local=None, teacher_logits=None, transfer_set="public"):
    """Gradient of one step's loss on fixed batches, with optional replaced labels/teachers."""
    b = tiny_bundle
    model = b.model(0)
    x_local = b.dataset.train_x[b.partition.participants[0]]
    y = b.dataset.train_y[b.partition.participants[0]] if y_local is None else y_local
    transfer = b.partition.participants[0] if transfer_set == "local" else b.partition.public
    logits = b.train_logits[[1]][:, transfer] if teacher_logits is None else teacher_logits
    x_transfer = b.dataset.train_x[transfer]
    step = StepLoss(
        x_transfer, teacher_target(logits, 2.0, "avg"), x_local, y,
        iter([torch.arange(32)]), transfer_set, alpha, 2.0, get_divergence("kl"),
    )  # fmt: skip
    loss = step(model, torch.arange(32))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss, torch.cat([g.flatten() for g in grads]), model, x_transfer, x_local, y


@pytest.mark.parametrize("transfer_set", ["public", "local"])
def test_alpha_zero_kd_term_has_no_effect(tiny_bundle, transfer_set):
    _, base, model, _, x_local, y = _loss_and_grad(
        tiny_bundle, alpha=0.0, transfer_set=transfer_set
    )
    other_teacher = torch.randn_like(tiny_bundle.train_logits[[1]]) * 5
    n = len(tiny_bundle.partition.participants[0]) if transfer_set == "local" else 300
    _, changed, *_ = _loss_and_grad(
        tiny_bundle, alpha=0.0, teacher_logits=other_teacher[:, :n], transfer_set=transfer_set
    )
    assert torch.equal(base, changed)
    # And it is exactly the gradient of the local cross-entropy alone.
    ce = F.cross_entropy(model(x_local[:32]), y[:32])
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(ce, list(model.parameters()))])
    assert torch.allclose(base, expected, atol=1e-6)
    # Control: with alpha > 0 the same teacher change does move the gradient.
    _, mixed, *_ = _loss_and_grad(tiny_bundle, alpha=0.5, transfer_set=transfer_set)
    _, mixed_changed, *_ = _loss_and_grad(
        tiny_bundle, alpha=0.5, teacher_logits=other_teacher[:, :n], transfer_set=transfer_set
    )
    assert not torch.allclose(mixed, mixed_changed)


@pytest.mark.parametrize("transfer_set", ["public", "local"])
def test_alpha_one_local_ce_has_no_effect(tiny_bundle, transfer_set):
    _, base, model, x_transfer, _, y = _loss_and_grad(
        tiny_bundle, alpha=1.0, transfer_set=transfer_set
    )
    shuffled = (y + 1) % 10
    _, changed, *_ = _loss_and_grad(
        tiny_bundle, alpha=1.0, y_local=shuffled, transfer_set=transfer_set
    )
    assert torch.equal(base, changed)
    # And it is exactly the gradient of T² · KL(teacher ‖ student) alone.
    transfer = (
        tiny_bundle.partition.participants[0]
        if transfer_set == "local"
        else tiny_bundle.partition.public
    )
    target = teacher_target(tiny_bundle.train_logits[[1]][:, transfer[:32]], 2.0, "avg")
    kd = kd_term(target, model(x_transfer[:32]), 2.0, get_divergence("kl"))
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(kd, list(model.parameters()))])
    assert torch.allclose(base, expected, atol=1e-6)
    _, mixed, *_ = _loss_and_grad(tiny_bundle, alpha=0.5, transfer_set=transfer_set)
    _, mixed_changed, *_ = _loss_and_grad(
        tiny_bundle, alpha=0.5, y_local=shuffled, transfer_set=transfer_set
    )
    assert not torch.allclose(mixed, mixed_changed)


def test_public_plus_self_adds_the_student_as_teacher(tiny_bundle):
    with_self = run_trial(tiny_bundle, 0, [1], alpha=1.0, transfer_set="public+self", seed=2)
    without = run_trial(tiny_bundle, 0, [1], alpha=1.0, transfer_set="public", seed=2)
    assert (with_self.accuracy_after, with_self.local_accuracy_after) != (
        without.accuracy_after,
        without.local_accuracy_after,
    )


def test_callback_exception_stops_the_round(tiny_bundle):
    class Pruned(Exception):
        pass

    seen = []

    def prune_at_first(point):
        seen.append(point)
        raise Pruned

    with pytest.raises(Pruned):
        run_trial(tiny_bundle, 0, [1], on_eval=prune_at_first)
    assert len(seen) == 1 and not seen[0].final


def test_exploding_loss_is_reported(tiny_bundle):
    recipe = dataclasses.replace(tiny_bundle.config.kd, lr=1e30)
    with pytest.raises(NonFiniteLoss, match="NaN or infinite"):
        run_trial(tiny_bundle, 0, [1], temperature=0.05, alpha=1.0, recipe=recipe)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"student": 0, "teachers": [0]}, "own teacher"),
        ({"student": 5, "teachers": [0]}, "not a participant"),
        ({"student": 0, "teachers": [9]}, "not a participant"),
        ({"student": 0, "teachers": []}, "no teacher"),
        ({"student": 0, "teachers": [1], "alpha": 1.5}, "alpha"),
        ({"student": 0, "teachers": [1], "temperature": 0.0}, "temperature"),
        (
            {"student": 0, "teachers": [1], "transfer_set": "private"},
            "public, public\\+self, local",
        ),
        ({"student": 0, "teachers": [1], "aggregation": "max"}, "avg, sum"),
    ],
)
def test_bad_arguments(tiny_bundle, kwargs, message):
    with pytest.raises(TrialError, match=message):
        run_trial(tiny_bundle, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_missing_cuda_device_is_a_clear_error(tiny_bundle):
    with pytest.raises(TrialError, match="does not exist"):
        run_trial(tiny_bundle, 0, [1], device="cuda:0")
    with pytest.raises(TrialError, match="cpu or cuda:N"):
        run_trial(tiny_bundle, 0, [1], device="tpu")
