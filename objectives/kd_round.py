"""One round of KD on cached soft targets: the loss of a step and the loop that trains and
evaluates. The pair trial (``trial.run_trial``: the student's head 1) and the neighbourhood round
(``neighbourhood.train_neighbourhood_round``: head 2 of a two-head model, head 1 frozen) both
train through :func:`train_round`, so they draw batches, step and evaluate alike. Stacked trials
(``batched.run_trials``) train their own way but take the same pieces from here: the batches a
seed gives (:func:`batch_generator`, :func:`step_batches`), the teachers' soft targets
(:func:`soft_targets`), the steps and evaluation points of a round (:func:`round_schedule`) and
what happens at a point (:func:`eval_point`).
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
from .optim import KDOptimizer
from .train import batches, lr_at


def batch_generator(seed: int) -> torch.Generator:
    """The generator a round with ``seed`` draws its batches from (all of them, in the order of
    :func:`step_batches`), so a single and a stacked trial of one seed see the same batches."""
    return torch.Generator().manual_seed(seed)


def local_batches(
    n: int, batch_size: int, gen: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Endless shuffled passes over the student's local data (public transfer sets draw one local
    batch per transfer batch, and the two sets differ in size)."""
    while True:
        yield from batches(n, batch_size, gen, device)


def draws_local(transfer_set: str, alpha: float) -> bool:
    """Whether each step takes a batch of local data besides its transfer batch: only for the CE
    term (α < 1) on a public transfer set (with ``local`` the transfer batch is the local one)."""
    return transfer_set != "local" and alpha < 1


def step_batches(
    n_transfer: int,
    local_stream: Iterator[torch.Tensor] | None,
    recipe: KDRecipe,
    generator: torch.Generator,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each step's (transfer batch, local batch or None): ``recipe.epochs`` shuffled passes over
    the transfer set, the local batch the next of ``local_stream`` (None: the steps draw none).

    The one batch order of a round. Both streams draw from ``generator`` lazily, so the order of
    the draws is part of it: an epoch's transfer permutation when its first batch is taken, then
    a local permutation whenever a step finds the local stream's pass used up.
    """
    for _ in range(recipe.epochs):
        for idx in batches(n_transfer, recipe.batch_size, generator, device):
            yield idx, None if local_stream is None else next(local_stream)


def round_schedule(n_transfer: int, recipe: KDRecipe) -> tuple[int, dict[int, int]]:
    """A round's number of steps and its evaluation points (step -> index 1..k, see
    ``eval_schedule``): both follow from the transfer set's size and the recipe alone."""
    total = recipe.epochs * math.ceil(n_transfer / recipe.batch_size)
    return total, eval_schedule(total, recipe.eval_points)


def soft_targets(
    data: DeviceTensors,
    student: int,
    sources: Sequence[int],
    *,
    transfer_set: str,
    temperature: float,
    aggregation: str,
) -> torch.Tensor:
    """The log soft targets [K', n_transfer, classes] (float64) of ``sources`` over the transfer
    set of ``student`` (``local``: its own data; any other: the public split), from the cached
    logits: computed once per round, so a step costs the student's forward and backward only."""
    transfer_idx = data.participants[student] if transfer_set == "local" else data.public
    # [K', n_transfer, classes]: K' = 1 for avg, one per source for sum.
    logits = data.train_logits[list(sources)][:, transfer_idx]
    return teacher_target(logits, temperature, aggregation)


def eval_point(
    measure: Callable[[], EvalPoint],
    nonfinite: torch.Tensor,
    *,
    step: int,
    total: int,
    context: str,
    on_eval: Callable[[EvalPoint], None] | None,
) -> EvalPoint:
    """A round's evaluation point after ``step`` of ``total`` steps: NonFiniteLoss (naming
    ``context``) if ``nonfinite`` flags a NaN or infinite loss so far, else the point ``measure``
    gives, handed to ``on_eval`` (whose exception ends the round)."""
    # The flag is read only here: reading it waits for the device, every step would be too often.
    if bool(nonfinite):
        raise NonFiniteLoss(
            f"the KD loss became NaN or infinite by step {step} of {total} ({context})"
        )
    point = measure()
    if on_eval is not None:
        on_eval(point)
    return point


@dataclass
class StepLoss:
    """One step's loss (docs/design.md §2) on a transfer batch ``idx``; zero-weight terms skipped.

    With transfer set ``local`` the transfer batch is the local batch (one forward, both terms);
    otherwise each step also takes a batch of the student's local data for the CE term: the one
    :func:`step_batches` drew from ``local_stream`` for the step (a direct call without one draws
    the next itself).
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
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        idx: torch.Tensor,
        lidx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of ``model`` on transfer batch ``idx`` (and local batch ``lidx``)."""
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
            lidx = next(self.local_stream) if lidx is None else lidx
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
    targets = soft_targets(
        data, student, sources, transfer_set=transfer_set, temperature=temperature,
        aggregation=aggregation,
    )  # fmt: skip
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
        yield batch_generator(seed)


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

    Batches in the order of :func:`step_batches`. ``evaluate`` runs at the points of
    :func:`round_schedule` and each point goes to ``on_eval``; an exception it raises ends the
    round. A NaN or infinite loss raises NonFiniteLoss (naming ``context``, the round's arguments)
    at the next point (:func:`eval_point`). ``precision`` ``bf16``: the forwards of the training
    steps under bfloat16 autocast.
    """
    # Head 1 is the model's plain call: the user's own models take the images alone.
    forward = model if head == 1 else functools.partial(model, head=head)
    model.train()
    opt = KDOptimizer([p for p in model.parameters() if p.requires_grad], recipe)
    n_transfer = len(loss.x_transfer)
    total, eval_at = round_schedule(n_transfer, recipe)
    local = loss.local_stream if draws_local(loss.transfer_set, loss.alpha) else None
    # Flagged on the device each step, read at evaluation points only (see eval_point).
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    for step, (idx, lidx) in enumerate(step_batches(n_transfer, local, recipe, generator, device)):
        opt.lr = lr_at(recipe, step, total)
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            value = loss(forward, idx, lidx)
        nonfinite |= ~torch.isfinite(value)
        opt.zero_grad()
        value.backward()
        opt.step()
        done = step + 1  # evaluation points count the steps taken
        if done in eval_at:
            measure = functools.partial(evaluate, model, eval_at[done], len(eval_at), done)
            eval_point(measure, nonfinite, step=done, total=total, context=context,
                       on_eval=on_eval)  # fmt: skip
    return total
