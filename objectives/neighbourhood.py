"""The neighbourhood round (Molo et al.'s poster, docs/design.md §1–2): a client learns from all its
neighbours at once, on a two-head model.

Head 1 and the backbone come pre-trained on the client's local data (the bundle). In the round
head 2 starts fresh and learns with α·T²·D(neighbours' soft predictions, head 2) + (1 − α)·CE(local
labels, head 2); the backbone trains with it, head 1 is frozen. The neighbours' soft predictions
come from the bundle's cached logits (their pre-trained models), combined by ``sum`` or ``avg``
exactly as in the pair mode (``divergences.teacher_target``/``kd_term``, ``kd_round.StepLoss``).
The accuracy reported is head 2's; the gain is measured against the client's accuracy before KD.
A round takes the pair trial's arguments (``trial.TrialSpec``): the client is its student, its
neighbours its teachers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .bundle import FederationBundle
from .config import NEIGHBOURHOOD_TRANSFER_SETS, KDRecipe
from .divergences import get_divergence
from .errors import TrialError
from .evaluation import RoundEvaluator
from .kd_round import StepLoss, make_step_loss, seeded, train_round
from .models import Net
from .trial import TrialResult, TrialSpec, check_device, check_round_args


@dataclass(frozen=True)
class RoundResult(TrialResult):
    """A client's round: ``accuracy_after`` (and gain, local accuracy, forgetting) is head 2's;
    ``head1_accuracy_after`` shows what training the shared backbone did to head 1."""

    head1_accuracy_after: float


def _check_args(bundle: FederationBundle, spec: TrialSpec) -> None:
    model = bundle.config.model.name
    if not model.endswith("-2head"):
        raise TrialError(
            f"the neighbourhood round needs a two-head model, the federation uses {model!r}: "
            f'set [model] name = "{model}-2head"'
        )
    check_round_args(bundle.participants, spec.student, spec.teachers, spec.temperature,
                     spec.alpha, spec.aggregation, words=("client", "neighbour"))  # fmt: skip
    if spec.transfer_set not in NEIGHBOURHOOD_TRANSFER_SETS:
        raise TrialError(
            f"the neighbourhood round's transfer set is one of "
            f"{', '.join(NEIGHBOURHOOD_TRANSFER_SETS)}, not {spec.transfer_set!r}"
        )


def round_loss(
    bundle: FederationBundle,
    spec: TrialSpec,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[StepLoss, int]:
    """The round's step loss (called with a model's head-2 forward and a transfer batch index)
    and the transfer set's size. The neighbours' soft targets over the whole transfer set are
    computed once here."""
    loss = make_step_loss(
        bundle.on(device), spec.student, spec.teachers, transfer_set=spec.transfer_set,
        temperature=spec.temperature, alpha=spec.alpha, aggregation=spec.aggregation,
        divergence=get_divergence(spec.divergence), batch_size=batch_size, generator=generator,
        device=device,
    )  # fmt: skip
    return loss, len(loss.x_transfer)


def train_neighbourhood_round(
    bundle: FederationBundle,
    spec: TrialSpec,
    *,
    device: str | torch.device = "cpu",
    recipe: KDRecipe | None = None,
) -> tuple[Net, RoundResult]:
    """The round of client ``spec.student`` from its neighbours ``spec.teachers``; returns the
    trained model and its result (see the module docstring).

    ``spec.on_eval`` is called at ``recipe.eval_points`` points (head 2's accuracy); an exception
    it raises ends the round. Raises NonFiniteLoss if the loss turns NaN or infinite. The same
    seed and inputs on the CPU give the same result.
    """
    _check_args(bundle, spec)
    recipe = recipe or bundle.config.kd
    started = time.perf_counter()
    device = check_device(device)
    client = spec.student
    # Head 2 is trained and reported; head 1's final accuracy shows what the backbone did to it.
    evaluate = RoundEvaluator(bundle, client, recipe, device, heads=(2, 1))
    with seeded(spec.seed, device) as gen:
        model = bundle.model(client, device)
        model.head2.reset_parameters()  # head 2 starts fresh, drawn from the round's seed
        model.head1.requires_grad_(False)  # head 1 keeps exactly what pre-training taught it
        loss, _ = round_loss(bundle, spec, batch_size=recipe.batch_size, generator=gen,
                             device=device)  # fmt: skip
        steps = train_round(
            model, loss, evaluate, head=2, recipe=recipe, generator=gen, device=device,
            on_eval=spec.on_eval, precision="fp32",
            context=f"T={spec.temperature}, alpha={spec.alpha}, "
            f"{spec.divergence}/{spec.aggregation}, {spec.transfer_set}",
        )  # fmt: skip
    result = RoundResult.after_round(
        bundle, client, spec.teachers, evaluate.final[:2], started=started, steps=steps,
        device=device, head1_accuracy_after=evaluate.final[2],
    )  # fmt: skip
    return model, result


def run_neighbourhood_round(
    bundle: FederationBundle,
    spec: TrialSpec,
    *,
    device: str | torch.device = "cpu",
    recipe: KDRecipe | None = None,
) -> RoundResult:
    """:func:`train_neighbourhood_round` without the model: what a trial records."""
    return train_neighbourhood_round(bundle, spec, device=device, recipe=recipe)[1]


def run_federation_round(
    bundle: FederationBundle,
    specs: Sequence[TrialSpec],
    *,
    device: str | torch.device = "cpu",
    recipe: KDRecipe | None = None,
) -> list[RoundResult]:
    """One round of the decentralized federation: each spec's client in turn (one spec per
    client), each from its pre-trained state against its neighbours' cached (pre-round)
    predictions."""
    return [run_neighbourhood_round(bundle, s, device=device, recipe=recipe) for s in specs]
