"""One-round KD: a copy of the student learns from cached teacher logits; one call, no database.

Per step the loss (docs/design.md §2) is α·T²·D(p_t(x_u), p_s(x_u)) + (1 − α)·CE(y_l, z_s(x_l)). The
teachers' soft targets for the whole transfer set are computed once per trial from the bundle's
cached logits, so a step costs the student's forward and backward only. A term whose weight is
zero (α = 0 or α = 1) is not computed at all: it could only have moved BatchNorm statistics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .bundle import FederationBundle
from .config import KDRecipe
from .divergences import AGGREGATIONS, Divergence, get_divergence, kd_term, teacher_target
from .errors import NonFiniteLoss, TrialError
from .train import accuracies, batches, lr_at, make_optimizer, predict

TRANSFER_SETS = ("public", "public+self", "local")
#: ``fp32``, or ``bf16``: the training steps' forward passes under bfloat16 autocast. The KD
#: term stays float64 (kd_term casts), the CE term float32 (autocast's policy), the weights and
#: the optimizer float32, the evaluations float32, so only the network's activations lose bits.
PRECISIONS = ("fp32", "bf16")


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


@dataclass(frozen=True)
class TrialResult:
    """What one round gives: accuracies in %, gain and forgetting in percentage points."""

    student: int
    teachers: tuple[int, ...]
    accuracy_before: float
    accuracy_after: float
    gain: float
    local_accuracy_before: float
    local_accuracy_after: float
    forgetting: float
    seconds: float
    steps: int
    device: str

    def as_dict(self) -> dict:
        out = asdict(self)
        out["teachers"] = list(self.teachers)
        return out


def check_device(device: str | torch.device) -> torch.device:
    """``cpu`` or an existing ``cuda:N``; anything else is a TrialError that says what exists."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TrialError(f"bad device {device!r}: write cpu or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (dev.index or 0) >= count:
            have = f"cuda:0..cuda:{count - 1}" if count else "no CUDA device"
            raise TrialError(
                f"device {device} does not exist here ({have}): use cpu or one of those"
            )
    elif dev.type != "cpu":
        raise TrialError(f"unsupported device {device!r}: write cpu or cuda:N")
    return dev


def check_precision(precision: str, device: torch.device) -> None:
    """``fp32`` anywhere; ``bf16`` on the CPU and on GPUs that support it (Ampere and later)."""
    if precision not in PRECISIONS:
        raise TrialError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TrialError(f"{device} has no bfloat16 support: use precision fp32")


def _check_args(
    bundle: FederationBundle,
    student: int,
    teachers: Sequence[int],
    temperature: float,
    alpha: float,
    transfer_set: str,
    aggregation: str,
) -> None:
    n = bundle.participants
    if not 0 <= student < n:
        raise TrialError(f"student {student} is not a participant: choose 0..{n - 1}")
    if not teachers:
        raise TrialError("no teacher given: pass at least one participant as teacher")
    for t in teachers:
        if not 0 <= t < n:
            raise TrialError(f"teacher {t} is not a participant: choose 0..{n - 1}")
        if t == student:
            raise TrialError(
                f"participant {student} cannot be its own teacher: drop it from teachers"
            )
    if not (temperature > 0 and math.isfinite(temperature)):
        raise TrialError(f"temperature {temperature} must be a finite number > 0")
    if not 0.0 <= alpha <= 1.0:
        raise TrialError(f"alpha {alpha} must lie in [0, 1]")
    if transfer_set not in TRANSFER_SETS:
        raise TrialError(
            f"unknown transfer set {transfer_set!r}: choose one of {', '.join(TRANSFER_SETS)}"
        )
    if aggregation not in AGGREGATIONS:
        raise TrialError(
            f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}"
        )


def eval_subset(bundle: FederationBundle, size: int) -> torch.Tensor:
    """The fixed test indices used at intermediate evaluation points (same for every trial)."""
    n = len(bundle.dataset.test_y)
    return (
        torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(size, n)].sort().values
    )


def run_trial(
    bundle: FederationBundle,
    student: int,
    teachers: Sequence[int],
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "kl",
    transfer_set: str = "public",
    aggregation: str = "avg",
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_eval: Callable[[EvalPoint], None] | None = None,
    recipe: KDRecipe | None = None,
    precision: str = "fp32",
) -> TrialResult:
    """Run one round of KD for ``student`` from ``teachers`` and report the accuracy change.

    ``transfer_set``: ``public`` (the held-out split), ``public+self`` (public inputs, the student's
    own pre-KD logits as one more teacher) or ``local`` (the student's own training data, whose
    labelled batch then doubles as the transfer batch). ``aggregation`` (``avg``/``sum``) combines
    several teachers. ``on_eval`` is called at ``recipe.eval_points`` points; an exception it raises
    (e.g. optuna.TrialPruned) ends the trial and propagates. Raises NonFiniteLoss if the loss turns
    NaN or infinite. Same seed and inputs on the CPU give the same result.

    ``recipe`` defaults to the KD recipe of the config the bundle was built with; since the bundle
    hash leaves the KD round out, a caller with its own config (the tuner) passes its own.
    ``precision`` is ``fp32`` (default) or ``bf16`` (see PRECISIONS).
    """
    _check_args(bundle, student, teachers, temperature, alpha, transfer_set, aggregation)
    div = get_divergence(divergence)
    recipe = recipe or bundle.config.kd
    started = time.perf_counter()
    device = check_device(device)
    check_precision(precision, device)
    data = bundle.on(device)

    local_idx = data.participants[student]
    x_local, y_local = data.train_x[local_idx], data.train_y[local_idx]
    sources = list(teachers) + ([student] if transfer_set == "public+self" else [])
    transfer_idx = local_idx if transfer_set == "local" else data.public
    # The teachers' soft targets over the whole transfer set, once: [K', n_transfer, classes].
    targets = teacher_target(data.train_logits[sources][:, transfer_idx], temperature, aggregation)
    x_transfer = x_local if transfer_set == "local" else data.public_x
    evaluate = _Evaluator(bundle, student, data, recipe)

    forked = []  # CUDA devices whose RNG the trial's seeding must not disturb for the caller
    if device.type == "cuda":
        forked = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = bundle.model(student, device)
        model.train()
        opt = make_optimizer(model.parameters(), recipe)
        step_loss = StepLoss(
            x_transfer, targets, x_local, y_local,
            _local_batches(len(x_local), recipe.batch_size, gen, device),
            transfer_set, alpha, temperature, div,
        )  # fmt: skip
        total = recipe.epochs * math.ceil(len(x_transfer) / recipe.batch_size)
        points = min(recipe.eval_points, total)
        eval_at = {math.ceil(total * i / points): i for i in range(1, points + 1)}
        # Checked only at evaluation points: a per-step check would sync the GPU every step.
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        step = 0
        for _ in range(recipe.epochs):
            for idx in batches(len(x_transfer), recipe.batch_size, gen, device):
                for group in opt.param_groups:
                    group["lr"] = lr_at(recipe, step, total)
                with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                    loss = step_loss(model, idx)
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
                        f"(T={temperature}, alpha={alpha}, {divergence}, {transfer_set})"
                    )
                point = evaluate(model, eval_at[step], points, step)
                if on_eval is not None:
                    on_eval(point)

    acc_before = float(bundle.accuracy[student])
    local_before = float(bundle.local_accuracy[student])
    acc_after, local_after = evaluate.final
    return TrialResult(
        student=student,
        teachers=tuple(teachers),
        accuracy_before=acc_before,
        accuracy_after=acc_after,
        gain=acc_after - acc_before,
        local_accuracy_before=local_before,
        local_accuracy_after=local_after,
        forgetting=local_before - local_after,
        seconds=time.perf_counter() - started,
        steps=total,
        device=str(device),
    )


class _Evaluator:
    """Evaluation points of one round: the last on the full test split (global and local
    accuracy), earlier ones on the fixed ``eval_subset`` against the cached pre-KD accuracy
    there."""

    def __init__(self, bundle: FederationBundle, student: int, data, recipe: KDRecipe):
        self.data, self.batch = data, recipe.eval_batch_size
        self.label_distribution = bundle.label_distribution[student]
        self.accuracy_before = float(bundle.accuracy[student])
        subset = eval_subset(bundle, recipe.eval_subset)
        hits = bundle.test_logits[student][subset].argmax(1) == bundle.dataset.test_y[subset]
        self.subset_before = 100.0 * hits.double().mean().item()
        subset = subset.to(data.test_x.device)
        self.x_subset, self.y_subset = data.test_x[subset], data.test_y[subset]
        self.final: tuple[float, float] | None = None

    def __call__(self, model: torch.nn.Module, index: int, points: int, step: int) -> EvalPoint:
        if index == points:
            logits = predict(model, self.data.test_x, self.batch)
            self.final = accuracies(logits, self.data.test_y, self.label_distribution)
            acc, before = self.final[0], self.accuracy_before
        else:
            logits = predict(model, self.x_subset, self.batch)
            acc = 100.0 * (logits.argmax(1) == self.y_subset).double().mean().item()
            before = self.subset_before
        return EvalPoint(index, points, step, acc, acc - before, index == points)


def _local_batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device):
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

    def __call__(self, model: torch.nn.Module, idx: torch.Tensor) -> torch.Tensor:
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
