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
from torch import Tensor

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


@dataclass(frozen=True)
class EvalSets:
    """The test rows a round's points are measured on, on the device: the full split (the last
    point) and the fixed ``eval_subset`` (the earlier ones). The same for every trial of a bundle
    and recipe, so trials trained together share one copy."""

    subset: Tensor  # indices into the test split (CPU)
    x: Tensor
    y: Tensor
    x_subset: Tensor
    y_subset: Tensor

    @classmethod
    def of(cls, bundle: FederationBundle, recipe: KDRecipe, device: torch.device) -> EvalSets:
        """The sets of ``recipe`` (its ``eval_subset`` size) on ``device``."""
        data = bundle.on(device)
        subset = eval_subset(bundle, recipe.eval_subset)
        rows = subset.to(device)
        return cls(subset, data.test_x, data.test_y, data.test_x[rows], data.test_y[rows])

    def inputs(self, final: bool) -> Tensor:
        """The images of the last point (``final``) or of an earlier one."""
        return self.x if final else self.x_subset


class RoundEvaluator:
    """Evaluation points of one round on the head it trains, the first of ``heads``: the last on
    the full test split (global and local accuracy, plus the plain accuracy of every other head
    in ``heads``: the neighbourhood round watches head 1), earlier ones on ``eval_subset``.

    Calling it predicts and scores one model; stacked trials predict all their students in one
    pass and hand each evaluator its logits (:meth:`score`), so both report alike. ``sets``:
    test sets to share (built here if not given).
    """

    def __init__(
        self,
        bundle: FederationBundle,
        student: int,
        recipe: KDRecipe,
        device: torch.device,
        heads: Sequence[int] = (1,),
        sets: EvalSets | None = None,
    ):
        self.sets = sets if sets is not None else EvalSets.of(bundle, recipe, device)
        self.batch, self.heads = recipe.eval_batch_size, tuple(heads)
        self.label_distribution = bundle.label_distribution[student]
        self.accuracy_before = float(bundle.accuracy[student])
        self.subset_before = subset_accuracy_before(bundle, student, self.sets.subset)
        #: Set at the last point: (accuracy, local accuracy, then each watched head's accuracy).
        self.final: tuple[float, ...] | None = None

    def __call__(self, model: Net, index: int, points: int, step: int) -> EvalPoint:
        """Measure point ``index`` of ``points`` (reached after ``step`` steps)."""
        final = index == points
        # Earlier points measure the trained head alone; the last one every head in ``heads``.
        heads = self.heads if final else self.heads[:1]
        logits = predict_heads(model, self.sets.inputs(final), self.batch, heads)
        return self.score(index, points, step, logits)

    def score(self, index: int, points: int, step: int, logits: Sequence[Tensor]) -> EvalPoint:
        """Point ``index`` of ``points`` from the float32 logits on ``sets.inputs`` of the trained
        head (and, at the last point, of each watched head after it)."""
        if index == points:
            trained, *watched = logits
            acc, local = accuracies(trained, self.sets.y, self.label_distribution)
            self.final = (acc, local, *(accuracy(z, self.sets.y) for z in watched))
            before = self.accuracy_before
        else:
            acc, before = accuracy(logits[0], self.sets.y_subset), self.subset_before
        return EvalPoint(index, points, step, acc, acc - before, index == points)
