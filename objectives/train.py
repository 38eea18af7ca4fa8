"""Training and evaluation on tensors that already live on the device (airbench style).

No Dataset, no DataLoader: a batch is an index into a tensor, shuffling is a permutation from a
seeded generator, augmentation is applied to the whole batch on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainRecipe
from .models import Net


def make_optimizer(params, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """A fresh torch.optim optimizer from a recipe, for pre-training (the KD round steps with
    objectives.optim.KDOptimizer, the same updates without importing torch._dynamo)."""
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(
        params,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.momentum > 0,
    )


def lr_at(recipe: TrainRecipe, step: int, total: int) -> float:
    """Learning rate at ``step`` of ``total``: constant, or cosine decay to zero."""
    if recipe.schedule == "cosine":
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * step / total))
    return recipe.lr


def batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[Tensor]:
    """Index batches of one shuffled pass over ``n`` items (the last batch may be short)."""
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)


def augment(x: Tensor, kind: str, generator: torch.Generator) -> Tensor:
    """Batched random flips and/or random crops (zero padding of size/8) on the device."""
    n, _, h, w = x.shape
    if "flip" in kind:
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if "crop" in kind:
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        rows = (dy.view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx.view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chans, rows, cols]
    return x


def train_supervised(
    model: nn.Module, x: Tensor, y: Tensor, recipe: TrainRecipe, generator: torch.Generator
) -> None:
    """Train ``model`` in place with cross-entropy on (x, y): a participant's pre-training."""
    model.train()
    opt = make_optimizer(model.parameters(), recipe)
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total, step = recipe.epochs * steps_per_epoch, 0
    for _ in range(recipe.epochs):
        for idx in batches(len(x), recipe.batch_size, generator, x.device):
            for group in opt.param_groups:
                group["lr"] = lr_at(recipe, step, total)
            xb = x[idx]
            if recipe.augmentation != "none":
                xb = augment(xb, recipe.augmentation, generator)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1


def predict(model: nn.Module, x: Tensor, batch_size: int = 500, head: int = 1) -> Tensor:
    """Logits of ``model`` (in eval mode) on all of ``x``, in float32, batched. Head 1 is the
    model's plain call, so the user's own models (images in, logits out) work too."""
    if head != 1:
        return predict_heads(model, x, batch_size, (head,))[0]
    with torch.inference_mode():
        was_training = model.training
        model.eval()
        out = torch.cat([model(xb).float() for xb in x.split(batch_size)])
        model.train(was_training)
    return out


@torch.inference_mode()
def predict_heads(model: Net, x: Tensor, batch_size: int, heads: Sequence[int]) -> list[Tensor]:
    """Logits of each of ``heads`` (in eval mode) on all of ``x``, in float32, batched: one
    backbone pass per batch feeds every head (the neighbourhood round reports two). Head 1
    alone is the model's plain call (any model: the user's own have no heads to name)."""
    if tuple(heads) == (1,):
        return [predict(model, x, batch_size)]
    layers = [model.head1 if h == 1 else model.head2 for h in heads]
    if None in layers:
        raise ValueError("this model has one head")
    was_training = model.training
    model.eval()
    outs: list[list[Tensor]] = [[] for _ in heads]
    for xb in x.split(batch_size):
        feats = model.backbone(xb)
        for out, layer in zip(outs, layers, strict=True):
            out.append(layer(feats).float())
    model.train(was_training)
    return [torch.cat(out) for out in outs]


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Share (in %) of rows whose largest logit is the label."""
    return 100.0 * (logits.argmax(1) == y).double().mean().item()


def per_class_accuracy(logits: Tensor, y: Tensor, classes: int) -> Tensor:
    """Accuracy (in %) on each class's test samples, float64 [classes]."""
    correct = (logits.argmax(1) == y).double()
    hits = torch.zeros(classes, dtype=torch.float64, device=y.device).index_add_(0, y, correct)
    counts = torch.bincount(y, minlength=classes).double()
    return 100.0 * hits / counts.clamp(min=1)


def accuracies(logits: Tensor, y: Tensor, label_distribution: Tensor) -> tuple[float, float]:
    """(global accuracy, local accuracy) in %: local re-weights per-class accuracy by the
    participant's own label distribution (docs/design.md §1)."""
    acc = accuracy(logits, y)
    per_class = per_class_accuracy(logits, y, len(label_distribution))
    local = float((per_class.cpu() * label_distribution.cpu().double()).sum())
    return acc, local
