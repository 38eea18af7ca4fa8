"""Divergences against float64 references (docs/design.md §2 written literally), and at extremes."""

import math

import pytest
import torch

from objectives.divergences import (
    DIVERGENCES,
    get_divergence,
    kd_loss,
    kd_term,
    teacher_target,
)
from objectives.errors import ConfigError


def _ref(name: str, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The textbook formula in float64, on probabilities (valid where nothing underflows)."""
    q, p = q.double(), p.double()
    m = (q + p) / 2

    def kl(a, b):
        return (a * (a / b).log()).sum(-1)

    def entropy_exp(x):
        return torch.exp(-(x * x.log()).sum(-1))

    if name == "ce":
        return -(q * p.log()).sum(-1)
    if name == "kl":
        return kl(q, p)
    if name == "js":
        return 0.5 * kl(q, m) + 0.5 * kl(p, m)
    if name == "sed":
        return entropy_exp(m) / torch.sqrt(entropy_exp(q) * entropy_exp(p)) - 1
    if name == "td":
        s = q + p
        terms = torch.where(s > 0, 2 * q * p / torch.where(s > 0, s, 1.0), 0.0)
        return 1 - terms.sum(-1)
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_matches_float64_reference(name, temperature):
    """The product path (float32 logits in, kd_term out) per row against the literal formula."""
    gen = torch.Generator().manual_seed(sorted(DIVERGENCES).index(name))
    zt = torch.randn(256, 10, generator=gen) * 3
    zs = torch.randn(256, 10, generator=gen) * 3
    # Rows where teacher and student nearly agree are where float32 cancellation would show
    # (divergences of 1e-5..1e-3, still well inside what a float64 reference resolves).
    zt[:32] = torch.randn(32, 10, generator=gen)
    zs[:32] = zt[:32] + 0.05 * temperature * torch.randn(32, 10, generator=gen)
    target = teacher_target(zt.unsqueeze(0), temperature, "avg")
    for row in range(zt.shape[0]):
        got = kd_term(
            target[:, row : row + 1], zs[row : row + 1], temperature, get_divergence(name)
        )
        q = torch.softmax(zt[row].double() / temperature, -1)
        p = torch.softmax(zs[row].double() / temperature, -1)
        ref = temperature**2 * _ref(name, q, p)
        rel = abs(got.double().item() - ref.item()) / abs(ref.item())
        assert rel < 1e-5, f"{name} row {row}: relative error {rel:.2e}"


def test_reference_is_sensitive():
    # The comparison above could pass vacuously if every divergence returned the same thing.
    log_q = torch.log_softmax(torch.randn(8, 10), -1)
    log_p = torch.log_softmax(torch.randn(8, 10), -1)
    values = {n: get_divergence(n)(log_q, log_p).sum().item() for n in DIVERGENCES}
    assert len({round(v, 6) for v in values.values()}) == len(DIVERGENCES)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_identical_distributions(name):
    log_q = torch.log_softmax(torch.randn(16, 10, dtype=torch.float64), -1)
    value = get_divergence(name)(log_q, log_q)
    if name == "ce":  # CE(q, q) is the entropy H(q), not 0
        expected = -(log_q.exp() * log_q).sum(-1)
    else:
        expected = torch.zeros(16, dtype=torch.float64)
    assert torch.allclose(value, expected, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
@pytest.mark.parametrize("temperature", [0.05, 1.0, 100.0])
@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_finite_value_and_gradient_at_extremes(name, temperature, scale):
    gen = torch.Generator().manual_seed(7)
    zt = (torch.rand(3, 64, 10, generator=gen) * 2 - 1) * scale
    zs = ((torch.rand(64, 10, generator=gen) * 2 - 1) * scale).requires_grad_()
    # One-hot-like extremes too: a single +1e4 logit against −1e4 everywhere else.
    zt[0, :, 1:] = -scale
    zt[0, :, 0] = scale
    for aggregation in ("avg", "sum"):
        target = teacher_target(zt, temperature, aggregation)
        loss = kd_term(target, zs, temperature, get_divergence(name))
        (grad,) = torch.autograd.grad(loss, zs)
        assert torch.isfinite(loss), f"{name} T={temperature} scale={scale}: loss {loss}"
        assert torch.isfinite(grad).all(), f"{name} T={temperature} scale={scale}: grad"
        assert loss.item() >= -1e-4 * temperature**2 or name == "ce"


def test_unknown_divergence_lists_known_ones():
    with pytest.raises(ConfigError) as err:
        get_divergence("hellinger")
    message = str(err.value)
    assert "hellinger" in message
    for name in DIVERGENCES:
        assert name in message


def test_aggregations_against_hand_computed_example():
    # Two teachers on one row of two classes; compute both aggregations by hand.
    t1, t2 = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    zs = torch.tensor([[0.0, math.log(1.0 / 3.0)]])
    q1, q2, p = [0.5, 0.5], [0.75, 0.25], [0.75, 0.25]

    def kl_hand(q, p):
        return sum(a * math.log(a / b) for a, b in zip(q, p, strict=True))

    avg = kd_loss([t1, t2], zs, 1.0, "kl", "avg").item()
    summed = kd_loss([t1, t2], zs, 1.0, "kl", "sum").item()
    assert avg == pytest.approx(kl_hand([0.625, 0.375], p), rel=1e-6)
    assert summed == pytest.approx(kl_hand(q1, p) + kl_hand(q2, p), rel=1e-6)


def test_kd_term_scales_with_t_squared_and_averages_over_batch():
    zt = torch.randn(1, 32, 10)
    zs = torch.randn(32, 10)
    for temperature in (0.5, 3.0):
        log_q = torch.log_softmax(zt[0] / temperature, -1)
        log_p = torch.log_softmax(zs / temperature, -1)
        expected = temperature**2 * get_divergence("js")(log_q, log_p).mean()
        got = kd_term(teacher_target(zt, temperature, "avg"), zs, temperature, get_divergence("js"))
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)
