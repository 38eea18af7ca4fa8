"""The evaluation points inside a KD round: when they fall, what they measure, what they report.

The last point is the end of the round, measured on the full test split; earlier ones use a fixed
subset of the test split, against the student's cached pre-KD accuracy there, so that the tuner
prunes from gains that compare alike across trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .bundle import FederationBundle
from .config import KDRecipe
from .models import Net
from .train import accuracies, accuracy, predict_heads


@dataclass(frozen=True)
class EvalPoint:
    """An evaluation inside the round, handed to ``on_eval`` (the tuner prunes from it).

    ``index`` runs 1..k; the last point is the end of the round and is measured on the full test
    split, earlier ones on the recipe's ``eval_subset`` (so ``gain`` there is an estimate).
    """

    index: int
    points: int
    step: int
    accuracy: float
    gain: float
    final: bool


def eval_schedule(total: int, eval_points: int) -> dict[int, int]:
    """Step -> evaluation index (1..k): k = min(eval_points, total) points spread evenly over
    ``total`` steps, the last at the end. Distinct steps, since total / k >= 1."""
    points = min(eval_points, total)
    return {math.ceil(total * i / points): i for i in range(1, points + 1)}


def eval_subset(bundle: FederationBundle, size: int) -> torch.Tensor:
    """The fixed test indices used at intermediate evaluation points (same for every trial)."""
    n = len(bundle.dataset.test_y)
    return (
        torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(size, n)].sort().values
    )


def subset_accuracy_before(bundle: FederationBundle, student: int, subset: torch.Tensor) -> float:
    """The student's pre-KD accuracy (%) on the test rows ``subset``, from its cached logits."""
    return accuracy(bundle.test_logits[student][subset], bundle.dataset.test_y[subset])


class RoundEvaluator:
    """Evaluation points of one round on the head it trains, the first of ``heads``: the last on
    the full test split (global and local accuracy, plus the plain accuracy of every other head
    in ``heads``: the neighbourhood round watches head 1), earlier ones on ``eval_subset``."""

    def __init__(
        self,
        bundle: FederationBundle,
        student: int,
        recipe: KDRecipe,
        device: torch.device,
        heads: Sequence[int] = (1,),
    ):
        self.data, self.batch, self.heads = bundle.on(device), recipe.eval_batch_size, tuple(heads)
        self.label_distribution = bundle.label_distribution[student]
        self.accuracy_before = float(bundle.accuracy[student])
        subset = eval_subset(bundle, recipe.eval_subset)
        self.subset_before = subset_accuracy_before(bundle, student, subset)
        subset = subset.to(device)
        self.x_subset, self.y_subset = self.data.test_x[subset], self.data.test_y[subset]
        #: Set at the last point: (accuracy, local accuracy, then each watched head's accuracy).
        self.final: tuple[float, ...] | None = None

    def __call__(self, model: Net, index: int, points: int, step: int) -> EvalPoint:
        """Measure point ``index`` of ``points`` (reached after ``step`` steps)."""
        if index == points:
            trained, *watched = predict_heads(model, self.data.test_x, self.batch, self.heads)
            acc, local = accuracies(trained, self.data.test_y, self.label_distribution)
            self.final = (acc, local, *(accuracy(z, self.data.test_y) for z in watched))
            before = self.accuracy_before
        else:
            (trained,) = predict_heads(model, self.x_subset, self.batch, self.heads[:1])
            acc, before = accuracy(trained, self.y_subset), self.subset_before
        return EvalPoint(index, points, step, acc, acc - before, index == points)
