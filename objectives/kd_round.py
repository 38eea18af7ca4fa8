"""One round of KD on cached soft targets: the loss of a step and the loop that trains and
evaluates. The pair trial (``trial.run_trial``: the student's head 1) and the neighbourhood round
(``neighbourhood.train_neighbourhood_round``: head 2 of a two-head model, head 1 frozen) both
train through :func:`train_round`, so they draw batches, step and evaluate alike.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .bundle import DeviceTensors
from .config import KDRecipe
from .divergences import Divergence, kd_term, teacher_target
from .errors import NonFiniteLoss
from .evaluation import EvalPoint, RoundEvaluator, eval_schedule
from .models import Net
from .train import batches, lr_at, make_optimizer


def local_batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device):
    """Endless shuffled passes over the student's local data (public transfer sets draw one local
    batch per transfer batch, and the two sets differ in size)."""
    while True:
        yield from batches(n, batch_size, gen, device)


@dataclass
class StepLoss:
    """One step's loss (docs/design.md §2) on a transfer batch ``idx``; zero-weight terms skipped.

    With transfer set ``local`` the transfer batch is the local batch (one forward, both terms);
    otherwise each step also takes the next batch of the student's local data for the CE term.
    """

    x_transfer: torch.Tensor
    targets: torch.Tensor  # [K', n_transfer, classes] log soft targets (float64)
    x_local: torch.Tensor
    y_local: torch.Tensor
    local_stream: Iterator[torch.Tensor]
    transfer_set: str
    alpha: float
    temperature: float
    divergence: Divergence

    def __call__(
        self, model: Callable[[torch.Tensor], torch.Tensor], idx: torch.Tensor
    ) -> torch.Tensor:
        a, t = self.alpha, self.temperature
        loss = torch.zeros((), device=idx.device)
        if self.transfer_set == "local":
            logits = model(self.x_local[idx])
            if a > 0:
                loss = loss + a * kd_term(self.targets[:, idx], logits, t, self.divergence)
            if a < 1:
                loss = loss + (1 - a) * F.cross_entropy(logits, self.y_local[idx])
            return loss
        if a > 0:
            logits = model(self.x_transfer[idx])
            loss = loss + a * kd_term(self.targets[:, idx], logits, t, self.divergence)
        if a < 1:
            lidx = next(self.local_stream)
            loss = loss + (1 - a) * F.cross_entropy(model(self.x_local[lidx]), self.y_local[lidx])
        return loss


def make_step_loss(
    data: DeviceTensors,
    student: int,
    sources: Sequence[int],
    *,
    transfer_set: str,
    temperature: float,
    alpha: float,
    aggregation: str,
    divergence: Divergence,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> StepLoss:
    """The step loss of ``student`` learning from the cached logits of ``sources`` on
    ``transfer_set`` (``local``: its own data; any other: the public split). The sources' soft
    targets over the whole transfer set are computed here, once per round."""
    local_idx = data.participants[student]
    x_local, y_local = data.train_x[local_idx], data.train_y[local_idx]
    local = transfer_set == "local"
    transfer_idx = local_idx if local else data.public
    # [K', n_transfer, classes]: K' = 1 for avg, one per source for sum.
    logits = data.train_logits[list(sources)][:, transfer_idx]
    targets = teacher_target(logits, temperature, aggregation)
    return StepLoss(
        x_local if local else data.public_x, targets, x_local, y_local,
        local_batches(len(x_local), batch_size, generator, device),
        transfer_set, alpha, temperature, divergence,
    )  # fmt: skip


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[torch.Generator]:
    """Torch's RNG seeded for a round (a fresh layer's initialisation) and the generator its
    batches are drawn from; on a forked RNG, so the caller's (its CUDA device's too) is kept."""
    forked = []
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def train_round(
    model: Net,
    loss: StepLoss,
    evaluate: RoundEvaluator,
    *,
    head: int,
    recipe: KDRecipe,
    generator: torch.Generator,
    device: torch.device,
    on_eval: Callable[[EvalPoint], None] | None,
    precision: str,
    context: str,
) -> int:
    """Train ``model`` in place (the parameters that require grad) on ``loss`` through head
    ``head`` for ``recipe.epochs`` passes over the transfer set; returns the number of steps.

    ``evaluate`` runs at the points of ``eval_schedule`` and each point goes to ``on_eval``; an
    exception it raises ends the round. A NaN or infinite loss raises NonFiniteLoss (naming
    ``context``, the round's arguments) at the next point. ``precision`` ``bf16``: the forwards
    of the training steps under bfloat16 autocast.
    """
    # Head 1 is the model's plain call: the user's own models take the images alone.
    forward = model if head == 1 else functools.partial(model, head=head)
    model.train()
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], recipe)
    n_transfer = len(loss.x_transfer)
    total = recipe.epochs * math.ceil(n_transfer / recipe.batch_size)
    eval_at = eval_schedule(total, recipe.eval_points)
    # Checked only at evaluation points: a per-step check would sync the GPU every step.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    step = 0
    for _ in range(recipe.epochs):
        for idx in batches(n_transfer, recipe.batch_size, generator, device):
            for group in opt.param_groups:
                group["lr"] = lr_at(recipe, step, total)
            with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                value = loss(forward, idx)
            nonfinite |= ~torch.isfinite(value)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            step += 1
            if step not in eval_at:
                continue
            if bool(nonfinite):
                raise NonFiniteLoss(
                    f"the KD loss became NaN or infinite by step {step} of {total} ({context})"
                )
            point = evaluate(model, eval_at[step], len(eval_at), step)
            if on_eval is not None:
                on_eval(point)
    return total
