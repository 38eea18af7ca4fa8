"""The neighbourhood round (Molo et al.'s poster, docs/design.md §1–2): a client learns from all its
neighbours at once, on a two-head model.

Head 1 and the backbone come pre-trained on the client's local data (the bundle). In the round
head 2 starts fresh and learns with α·T²·D(neighbours' soft predictions, head 2) + (1 − α)·CE(local
labels, head 2); the backbone trains with it, head 1 is frozen. The neighbours' soft predictions
come from the bundle's cached logits (their pre-trained models), combined by ``sum`` or ``avg``
exactly as in the pair mode (``divergences.teacher_target``/``kd_term``, ``trial.StepLoss``).
The accuracy reported is head 2's; the gain is measured against the client's accuracy before KD.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .bundle import FederationBundle
from .config import NEIGHBOURHOOD_TRANSFER_SETS, KDRecipe
from .divergences import AGGREGATIONS, get_divergence, teacher_target
from .errors import NonFiniteLoss, TrialError
from .models import Net
from .train import accuracies, batches, lr_at, make_optimizer
from .trial import EvalPoint, StepLoss, TrialResult, _local_batches, check_device, eval_subset


@dataclass(frozen=True)
class RoundResult(TrialResult):
    """A client's round: ``accuracy_after`` (and gain, local accuracy, forgetting) is head 2's;
    ``head1_accuracy_after`` shows what training the shared backbone did to head 1."""

    head1_accuracy_after: float


def _check_args(
    bundle: FederationBundle,
    client: int,
    neighbours: Sequence[int],
    temperature: float,
    alpha: float,
    aggregation: str,
    transfer_set: str,
) -> None:
    model = bundle.config.model.name
    if not model.endswith("-2head"):
        raise TrialError(
            f"the neighbourhood round needs a two-head model, the federation uses {model!r}: "
            f'set [model] name = "{model}-2head"'
        )
    n = bundle.participants
    if not 0 <= client < n:
        raise TrialError(f"client {client} is not a participant: choose 0..{n - 1}")
    if not neighbours:
        raise TrialError(f"client {client} has no neighbour: pass at least one")
    if len(set(neighbours)) != len(neighbours):
        raise TrialError(f"neighbours {list(neighbours)} name a client twice: list each once")
    for k in neighbours:
        if not 0 <= k < n:
            raise TrialError(f"neighbour {k} is not a participant: choose 0..{n - 1}")
        if k == client:
            raise TrialError(f"client {client} cannot be its own neighbour: drop it")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise TrialError(f"temperature {temperature} must be a finite number > 0")
    if not 0.0 <= alpha <= 1.0:
        raise TrialError(f"alpha {alpha} must lie in [0, 1]")
    if aggregation not in AGGREGATIONS:
        raise TrialError(
            f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}"
        )
    if transfer_set not in NEIGHBOURHOOD_TRANSFER_SETS:
        raise TrialError(
            f"the neighbourhood round's transfer set is one of "
            f"{', '.join(NEIGHBOURHOOD_TRANSFER_SETS)}, not {transfer_set!r}"
        )


def round_loss(
    bundle: FederationBundle,
    client: int,
    neighbours: Sequence[int],
    *,
    temperature: float,
    alpha: float,
    divergence: str,
    aggregation: str,
    transfer_set: str,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[StepLoss, int]:
    """The round's step loss (called with a model's head-2 forward and a transfer batch index)
    and the transfer set's size. The neighbours' soft targets over the whole transfer set are
    computed once here."""
    data = bundle.on(device)
    local_idx = data.participants[client]
    x_local, y_local = data.train_x[local_idx], data.train_y[local_idx]
    local = transfer_set == "local"
    transfer_idx = local_idx if local else data.public
    # [K', n_transfer, classes]: K' = 1 for avg, one per neighbour for sum.
    targets = teacher_target(
        data.train_logits[list(neighbours)][:, transfer_idx], temperature, aggregation
    )
    x_transfer = x_local if local else data.public_x
    loss = StepLoss(
        x_transfer, targets, x_local, y_local,
        _local_batches(len(x_local), batch_size, generator, device),
        transfer_set, alpha, temperature, get_divergence(divergence),
    )  # fmt: skip
    return loss, len(x_transfer)


def train_neighbourhood_round(
    bundle: FederationBundle,
    client: int,
    neighbours: Sequence[int],
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "kl",
    aggregation: str = "avg",
    transfer_set: str = "local",
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_eval: Callable[[EvalPoint], None] | None = None,
    recipe: KDRecipe | None = None,
) -> tuple[Net, RoundResult]:
    """One client's round; returns the trained model and its result (see the module docstring).

    ``on_eval`` is called at ``recipe.eval_points`` points (head 2's accuracy); an exception it
    raises ends the round. Raises NonFiniteLoss if the loss turns NaN or infinite. The same seed
    and inputs on the CPU give the same result.
    """
    _check_args(bundle, client, neighbours, temperature, alpha, aggregation, transfer_set)
    recipe = recipe or bundle.config.kd
    started = time.perf_counter()
    device = check_device(device)
    evaluate = _Head2Evaluator(bundle, client, recipe, device)

    forked = []  # CUDA devices whose RNG the round's seeding must not disturb for the caller
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = bundle.model(client, device)
        model.head2.reset_parameters()  # head 2 starts fresh, drawn from the round's seed
        model.head1.requires_grad_(False)  # head 1 keeps exactly what pre-training taught it
        model.train()
        opt = make_optimizer([p for p in model.parameters() if p.requires_grad], recipe)
        step_loss, n_transfer = round_loss(
            bundle, client, neighbours, temperature=temperature, alpha=alpha,
            divergence=divergence, aggregation=aggregation, transfer_set=transfer_set,
            batch_size=recipe.batch_size, generator=gen, device=device,
        )  # fmt: skip
        head2 = functools.partial(model, head=2)
        total = recipe.epochs * math.ceil(n_transfer / recipe.batch_size)
        points = min(recipe.eval_points, total)
        eval_at = {math.ceil(total * i / points): i for i in range(1, points + 1)}
        # Checked only at evaluation points: a per-step check would sync the GPU every step.
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        step = 0
        for _ in range(recipe.epochs):
            for idx in batches(n_transfer, recipe.batch_size, gen, device):
                for group in opt.param_groups:
                    group["lr"] = lr_at(recipe, step, total)
                loss = step_loss(head2, idx)
                nonfinite |= ~torch.isfinite(loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if step not in eval_at:
                    continue
                if bool(nonfinite):
                    raise NonFiniteLoss(
                        f"the KD loss became NaN or infinite by step {step} of {total} "
                        f"(T={temperature}, alpha={alpha}, {divergence}/{aggregation}, "
                        f"{transfer_set})"
                    )
                point = evaluate(model, eval_at[step], points, step)
                if on_eval is not None:
                    on_eval(point)

    acc_before = float(bundle.accuracy[client])
    local_before = float(bundle.local_accuracy[client])
    acc_after, local_after, head1_after = evaluate.final
    result = RoundResult(
        student=client,
        teachers=tuple(neighbours),
        accuracy_before=acc_before,
        accuracy_after=acc_after,
        gain=acc_after - acc_before,
        local_accuracy_before=local_before,
        local_accuracy_after=local_after,
        forgetting=local_before - local_after,
        seconds=time.perf_counter() - started,
        steps=total,
        device=str(device),
        head1_accuracy_after=head1_after,
    )
    return model, result


def run_neighbourhood_round(
    bundle: FederationBundle, client: int, neighbours: Sequence[int], **kwargs
) -> RoundResult:
    """:func:`train_neighbourhood_round` without the model: what a trial records."""
    return train_neighbourhood_round(bundle, client, neighbours, **kwargs)[1]


def run_federation_round(
    bundle: FederationBundle, neighbour_sets: Sequence[Sequence[int]], **kwargs
) -> list[RoundResult]:
    """Every client's round, each from its pre-trained state against its neighbours' cached
    (pre-round) predictions: one round of the decentralized federation, clients one by one."""
    return [
        run_neighbourhood_round(bundle, k, neighbour_sets[k], **kwargs)
        for k in range(bundle.participants)
    ]


@torch.inference_mode()
def _both_heads(model: Net, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Head 1 and head 2 logits on all of ``x`` from one backbone pass (eval mode, float32)."""
    was_training = model.training
    model.eval()
    ones, twos = [], []
    for xb in x.split(batch_size):
        feats = model.backbone(xb)
        ones.append(model.head1(feats).float())
        twos.append(model.head2(feats).float())
    model.train(was_training)
    return torch.cat(ones), torch.cat(twos)


class _Head2Evaluator:
    """Evaluation points of a round, on head 2: the last on the full test split (global and local
    accuracy, and head 1's accuracy), earlier ones on the fixed ``eval_subset`` against the
    client's cached pre-KD accuracy there (as in the pair mode, so pruning compares alike)."""

    def __init__(
        self, bundle: FederationBundle, client: int, recipe: KDRecipe, device: torch.device
    ):
        self.data, self.batch = bundle.on(device), recipe.eval_batch_size
        self.label_distribution = bundle.label_distribution[client]
        self.accuracy_before = float(bundle.accuracy[client])
        subset = eval_subset(bundle, recipe.eval_subset)
        hits = bundle.test_logits[client][subset].argmax(1) == bundle.dataset.test_y[subset]
        self.subset_before = 100.0 * hits.double().mean().item()
        subset = subset.to(device)
        self.x_subset, self.y_subset = self.data.test_x[subset], self.data.test_y[subset]
        self.final: tuple[float, float, float] | None = None

    def __call__(self, model: Net, index: int, points: int, step: int) -> EvalPoint:
        if index == points:
            logits1, logits2 = _both_heads(model, self.data.test_x, self.batch)
            acc, local = accuracies(logits2, self.data.test_y, self.label_distribution)
            head1 = 100.0 * (logits1.argmax(1) == self.data.test_y).double().mean().item()
            self.final = (acc, local, head1)
            before = self.accuracy_before
        else:
            _, logits2 = _both_heads(model, self.x_subset, self.batch)
            acc = 100.0 * (logits2.argmax(1) == self.y_subset).double().mean().item()
            before = self.subset_before
        return EvalPoint(index, points, step, acc, acc - before, index == points)
