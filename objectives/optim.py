"""The KD round's optimizer: torch.optim's SGD (Nesterov when momentum > 0) and Adam, the same
update operations in the same order as their per-tensor implementations, without torch.optim.

Why not torch.optim itself: its first use imports torch._dynamo (a compiler a KD round never
uses), about 1.2 s of every worker process's start on the development machine. Pre-training
keeps torch.optim (``train.make_optimizer``): it runs once per federation, and what it produces
is named by the federation hash. tests/objectives/test_optim.py holds these updates to
torch.optim's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import TrainRecipe


class KDOptimizer:
    """``recipe``'s optimizer over ``params`` with a learning rate set per step (``lr``), as
    torch.optim's SGD/Adam with ``lr=recipe.lr``, ``weight_decay``, ``momentum`` and
    ``nesterov=momentum > 0`` (SGD), defaults otherwise."""

    def __init__(self, params: Iterable[torch.Tensor], recipe: TrainRecipe):
        self.params = list(params)
        self.recipe = recipe
        self.lr = recipe.lr
        # Per parameter: the momentum buffer (SGD) or the two moments (Adam), made on first use.
        self.state: list[dict] = [{} for _ in self.params]

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``): the next backward writes them afresh."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient, at :attr:`lr`."""
        r = self.recipe
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            grad = p.grad if r.weight_decay == 0 else p.grad.add(p, alpha=r.weight_decay)
            if r.optimizer == "adam":
                self._adam(p, grad, state)
            else:
                self._sgd(p, grad, state)

    def _sgd(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        m = self.recipe.momentum
        if m != 0:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = grad.detach().clone()
            else:
                buf.mul_(m).add_(grad)  # dampening 0
            grad = grad.add(buf, alpha=m)  # Nesterov
        p.add_(grad, alpha=-self.lr)

    def _adam(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults
        if not state:
            state["step"] = 0  # per parameter, as torch.optim counts: only steps it took part in
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(state["step"])
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-(self.lr / (1 - beta1**step)))
