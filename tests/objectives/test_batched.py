"""Batched trials (stacked students, one vmapped forward) against the same trials run one by one:
same parameters and seed must give the same students and accuracies, up to float rounding."""

import dataclasses
import warnings

import pytest
import torch

from objectives import (
    FederationBundle,
    NonFiniteLoss,
    TrialError,
    TrialResult,
    run_trial,
)
from objectives import batched as batched_module
from objectives.batched import TrialSpec, run_trials
from objectives.evaluation import EvalSets
from objectives.kd_round import StepLoss
from objectives.models import build_model

# Every transfer set, both aggregations, α at both ends (a term left out), three students with
# different local sizes (so different step counts and short last batches), every divergence.
SPECS = [
    TrialSpec(0, (1,), temperature=2.0, alpha=0.6, divergence="js", seed=1),
    TrialSpec(1, (0,), temperature=0.5, alpha=0.3, divergence="kl", transfer_set="local", seed=2),
    TrialSpec(
        2,
        (0, 1),
        temperature=4.0,
        alpha=0.9,
        divergence="sed",
        transfer_set="public+self",
        aggregation="sum",
        seed=3,
    ),
    TrialSpec(0, (2,), temperature=1.0, alpha=1.0, divergence="td", seed=4),
    TrialSpec(1, (2,), temperature=1.0, alpha=0.0, divergence="ce", seed=5),
    TrialSpec(2, (1,), temperature=3.0, alpha=0.5, divergence="kl", transfer_set="local", seed=6),
    TrialSpec(
        0,
        (1, 2),
        temperature=8.0,
        alpha=0.7,
        divergence="ce",
        transfer_set="public+self",
        aggregation="avg",
        seed=7,
    ),
]


def _single(bundle, spec: TrialSpec, **kw) -> TrialResult:
    return run_trial(
        bundle, spec.student, list(spec.teachers), temperature=spec.temperature,
        alpha=spec.alpha, divergence=spec.divergence, transfer_set=spec.transfer_set,
        aggregation=spec.aggregation, seed=spec.seed, on_eval=spec.on_eval, **kw,
    )  # fmt: skip


@pytest.fixture
def trained(monkeypatch):
    """Spies that keep the students: every model ``bundle.model`` builds (run_trial trains its
    own in place) and every stacked batch (run_trials updates it in place)."""
    kept: dict[str, list] = {"models": [], "stacked": []}
    stack = torch.func.stack_module_state

    def spy_stack(models):
        kept["stacked"].append(stack(models))
        return kept["stacked"][-1]

    model = FederationBundle.model

    def spy_model(self, participant, device="cpu"):
        kept["models"].append(model(self, participant, device))
        return kept["models"][-1]

    monkeypatch.setattr(batched_module, "stack_module_state", spy_stack)
    monkeypatch.setattr(FederationBundle, "model", spy_model)
    return kept


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the tensor's scale."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def test_batched_trials_are_the_single_trials(tiny_bundle, trained):
    points_b: list[list] = [[] for _ in SPECS]
    points_s: list[list] = [[] for _ in SPECS]
    specs_b = [dataclasses.replace(s, on_eval=points_b[i].append) for i, s in enumerate(SPECS)]
    outcomes = run_trials(tiny_bundle, specs_b)
    params, buffers = trained["stacked"][0]
    trained["models"].clear()
    singles = []
    for i, s in enumerate(SPECS):
        singles.append(_single(tiny_bundle, dataclasses.replace(s, on_eval=points_s[i].append)))
    assert len({r.steps for r in singles}) > 1  # the batch really mixes trial lengths
    for i, (got, want) in enumerate(zip(outcomes, singles, strict=True)):
        assert isinstance(got, TrialResult), got
        assert got.steps == want.steps and got.student == want.student
        # Accuracies on 400 test images: one image is 0.25 pp; rounding must not move more.
        assert got.accuracy_after == pytest.approx(want.accuracy_after, abs=0.5)
        assert got.local_accuracy_after == pytest.approx(want.local_accuracy_after, abs=0.5)
        assert [(p.index, p.step, p.final) for p in points_b[i]] == [
            (p.index, p.step, p.final) for p in points_s[i]
        ]
        model = trained["models"][i]
        for name, value in model.named_parameters():
            assert _close(params[name][i], value.detach()) < 1e-4, (i, name)
        for name, value in model.named_buffers():
            assert _close(buffers[name][i], value) < 1e-4, (i, name)


def test_batched_trials_draw_the_single_trials_batches(tiny_bundle, monkeypatch):
    """Same seed, same batches, step by step (two epochs: a local pass ends mid-epoch and the
    epoch boundary draws a new transfer permutation): the transfer and local batch of each step
    of a stacked trial are the ones run_trial's loss is called with."""
    seen = []
    call = StepLoss.__call__

    def spy(self, model, idx, lidx=None):
        seen.append((idx.clone(), None if lidx is None else lidx.clone()))
        return call(self, model, idx, lidx)

    monkeypatch.setattr(StepLoss, "__call__", spy)
    recipe = dataclasses.replace(tiny_bundle.config.kd, epochs=2)
    sets = EvalSets.of(tiny_bundle, recipe, torch.device("cpu"))
    data = tiny_bundle.on("cpu")
    for i, spec in enumerate(SPECS):
        seen.clear()
        _single(tiny_bundle, spec, recipe=recipe)
        plan = batched_module._Plan.make(i, spec, tiny_bundle, data, recipe, sets)
        assert len(plan.steps) == len(seen) == plan.total, i
        for step, ((idx, lidx), (want, want_local)) in enumerate(
            zip(plan.steps, seen, strict=True)
        ):
            assert torch.equal(idx, want), (i, step)
            assert (lidx is None) == (want_local is None), (i, step)
            assert lidx is None or torch.equal(lidx, want_local), (i, step)


def test_each_trial_keeps_its_own_parameters(tiny_bundle, trained):
    """The same spec twice next to others gives the same student; a changed T does not."""
    base = SPECS[0]
    specs = [base, dataclasses.replace(base, temperature=16.0), base, SPECS[1]]
    outcomes = run_trials(tiny_bundle, specs)
    assert all(isinstance(o, TrialResult) for o in outcomes)
    params, _ = trained["stacked"][0]
    weight = params["head1.weight"]
    assert _close(weight[0], weight[2]) < 1e-6
    assert _close(weight[0], weight[1]) > 1e-3


def test_adam_cosine_and_weight_decay(tiny_bundle, trained):
    recipe = dataclasses.replace(
        tiny_bundle.config.kd, optimizer="adam", schedule="cosine", weight_decay=1e-3, lr=1e-3
    )
    specs = [SPECS[0], SPECS[1], SPECS[4]]  # three lengths: cosine schedules of their own
    run_trials(tiny_bundle, specs, recipe=recipe)
    params, _ = trained["stacked"][0]
    trained["models"].clear()
    for i, s in enumerate(specs):
        _single(tiny_bundle, s, recipe=recipe)
        for name, value in trained["models"][i].named_parameters():
            assert _close(params[name][i], value.detach()) < 1e-4, (i, name)


def test_a_pruned_trial_ends_alone(tiny_bundle):
    class Pruned(Exception):
        pass

    seen = []

    def prune_at_first(point):
        seen.append(point)
        raise Pruned

    specs = [SPECS[0], dataclasses.replace(SPECS[2], on_eval=prune_at_first), SPECS[3]]
    outcomes = run_trials(tiny_bundle, specs)
    assert isinstance(outcomes[1], Pruned)
    assert len(seen) == 1 and not seen[0].final
    for got, spec in ((outcomes[0], specs[0]), (outcomes[2], specs[2])):
        want = _single(tiny_bundle, spec)
        assert got.accuracy_after == pytest.approx(want.accuracy_after, abs=0.5)


def test_bad_arguments_fail_their_trial_only(tiny_bundle):
    bad_teacher = TrialSpec(0, (0,))
    bad_divergence = TrialSpec(0, (1,), divergence="hellinger")
    outcomes = run_trials(tiny_bundle, [bad_teacher, SPECS[0], bad_divergence])
    assert isinstance(outcomes[0], TrialError) and "own teacher" in str(outcomes[0])
    assert isinstance(outcomes[1], TrialResult)
    assert "unknown divergence" in str(outcomes[2])


def test_exploding_loss_is_reported_in_its_slot(tiny_bundle):
    recipe = dataclasses.replace(tiny_bundle.config.kd, lr=1e30)
    spec = TrialSpec(0, (1,), temperature=0.05, alpha=1.0)
    outcomes = run_trials(tiny_bundle, [spec, spec], recipe=recipe)
    assert all(isinstance(o, NonFiniteLoss) for o in outcomes)
    assert "NaN or infinite" in str(outcomes[0])


def test_bf16_batched_trials_agree_with_bf16_single_trials(tiny_bundle):
    specs = [SPECS[0], SPECS[1], SPECS[2]]
    outcomes = run_trials(tiny_bundle, specs, precision="bf16")
    for got, spec in zip(outcomes, specs, strict=True):
        want = _single(tiny_bundle, spec, precision="bf16")
        # bfloat16 keeps 8 bits: the two paths round differently, by a few test images at most.
        assert got.accuracy_after == pytest.approx(want.accuracy_after, abs=1.5)


def test_unknown_precision_is_refused(tiny_bundle):
    with pytest.raises(TrialError, match="unknown precision"):
        run_trials(tiny_bundle, [SPECS[0]], precision="fp8")


def test_resnet18_vmaps_without_a_fallback_and_matches_its_models():
    """The paper-scale student (BatchNorm everywhere, a global average pool) through the batched
    skeleton: outputs and gradients equal each model's own, and vmap never falls back to a
    per-trial loop (it warns when it does: the adaptive pool on channels_last did)."""
    torch.manual_seed(0)
    models = [build_model("resnet18", 3, 10, 16).train() for _ in range(2)]
    params, buffers = torch.func.stack_module_state(models)
    skeleton = batched_module._vmap_friendly(build_model("resnet18", 3, 10, 16).to("meta"))
    # As run_trials feeds it: channels_last images, a trial dimension in front.
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last).unflatten(0, (2, 4))

    def forward(p, b, xb):
        return torch.func.functional_call(skeleton, (p, b), (xb,))

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*batching rule.*")
        out = torch.func.vmap(forward)(params, buffers, x)
        out.square().sum().backward()
    for i, model in enumerate(models):
        own = model(x[i])
        own.square().sum().backward()
        assert _close(out[i], own) < 1e-5
        for name, value in model.named_parameters():
            assert _close(params[name].grad[i], value.grad) < 1e-4, name
        for name, value in model.named_buffers():  # BN running statistics, updated once each
            assert _close(buffers[name][i], value) < 1e-5, name
