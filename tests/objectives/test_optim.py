"""The KD round's optimizer against torch.optim (the reference it replaces): the same recipe's
SGD or Adam, the same gradients and per-step learning rates, bit for bit, in float32 (what trials
train in) and float64."""

from __future__ import annotations

import pytest
import torch

from objectives import KDRecipe
from objectives.optim import KDOptimizer
from objectives.train import lr_at, make_optimizer

RECIPES = {
    "sgd-nesterov": KDRecipe(),  # the default: SGD, momentum 0.9, weight decay 5e-4
    "sgd-plain": KDRecipe(momentum=0.0, weight_decay=0.0),
    "adam": KDRecipe(optimizer="adam", lr=0.01),
    "adam-decay": KDRecipe(optimizer="adam", lr=0.01, weight_decay=1e-3),
}
SHAPES = [(8, 3, 3, 3), (8,), (10, 32)]
STEPS = 7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(RECIPES))
def test_updates_equal_torch_optims_bit_for_bit(name: str, dtype: torch.dtype) -> None:
    recipe = RECIPES[name]
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    ours = [p.clone().requires_grad_() for p in start]
    ref = [p.clone().requires_grad_() for p in start]
    opt, torch_opt = KDOptimizer(ours, recipe), make_optimizer(ref, recipe)
    for step in range(STEPS):
        grads = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
        lr = lr_at(recipe, step, STEPS)  # the cosine schedule, as a KD round sets it
        opt.lr = lr
        for group in torch_opt.param_groups:
            group["lr"] = lr
        skip = 1 if step == 3 else None  # a parameter without a gradient in one step
        for i, (a, b, g) in enumerate(zip(ours, ref, grads, strict=True)):
            a.grad = None if i == skip else g.clone()
            b.grad = None if i == skip else g.clone()
        opt.step()
        torch_opt.step()
        for a, b in zip(ours, ref, strict=True):
            assert torch.equal(a, b), (name, step)
    assert any(not torch.equal(a, s) for a, s in zip(ours, start, strict=True))  # it moved


def test_zero_grad_drops_the_gradients() -> None:
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    opt = KDOptimizer([p], KDRecipe())
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # no gradient: nothing moves
    assert torch.equal(p, torch.zeros(3))
