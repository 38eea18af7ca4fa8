"""One-round KD: a copy of the student learns from cached teacher logits; one call, no database.

Per step the loss (docs/design.md §2) is α·T²·D(p_t(x_u), p_s(x_u)) + (1 − α)·CE(y_l, z_s(x_l)). The
teachers' soft targets for the whole transfer set are computed once per trial from the bundle's
cached logits, so a step costs the student's forward and backward only. A term whose weight is
zero (α = 0 or α = 1) is not computed at all: it could only have moved BatchNorm statistics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from .bundle import FederationBundle
from .config import KDRecipe
from .divergences import AGGREGATIONS, get_divergence
from .errors import TrialError
from .evaluation import EvalPoint, RoundEvaluator
from .kd_round import make_step_loss, seeded, train_round

TRANSFER_SETS = ("public", "public+self", "local")
#: ``fp32``, or ``bf16``: the training steps' forward passes under bfloat16 autocast. The KD
#: term stays float64 (kd_term casts), the CE term float32 (autocast's policy), the weights and
#: the optimizer float32, the evaluations float32, so only the network's activations lose bits.
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrialSpec:
    """The arguments of one KD round besides the device, recipe and precision: who learns from
    whom, the round's hyperparameters, its seed and its evaluation-point callback. A pair trial
    (:func:`run_trial`, ``batched.run_trials``) and a client's neighbourhood round
    (``neighbourhood.train_neighbourhood_round``: the client is the student, its neighbours the
    teachers) take the same."""

    student: int
    teachers: tuple[int, ...]
    temperature: float = 1.0
    alpha: float = 0.5
    divergence: str = "kl"
    transfer_set: str = "public"
    aggregation: str = "avg"
    seed: int = 0
    on_eval: Callable[[EvalPoint], None] | None = None


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

    @classmethod
    def after_round(
        cls,
        bundle: FederationBundle,
        student: int,
        teachers: Sequence[int],
        final: Sequence[float],
        *,
        started: float,
        steps: int,
        device: torch.device,
        **more: float,
    ) -> TrialResult:
        """The result of a round that left ``student`` at ``final`` = (accuracy, local accuracy),
        against its pre-KD accuracies in the bundle; ``started`` is its ``perf_counter`` start."""
        acc_after, local_after = final
        acc_before = float(bundle.accuracy[student])
        local_before = float(bundle.local_accuracy[student])
        return cls(
            student=student,
            teachers=tuple(teachers),
            accuracy_before=acc_before,
            accuracy_after=acc_after,
            gain=acc_after - acc_before,
            local_accuracy_before=local_before,
            local_accuracy_after=local_after,
            forgetting=local_before - local_after,
            seconds=time.perf_counter() - started,
            steps=steps,
            device=str(device),
            **more,
        )

    def as_dict(self) -> dict:
        out = asdict(self)
        out["teachers"] = list(self.teachers)
        return out


def check_device(device: str | torch.device) -> torch.device:
    """``cpu`` or an existing ``cuda:N``; anything else is a TrialError that says what exists."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TrialError(f"unknown device {device!r}: write cpu or cuda:N") from None
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


def check_round_args(
    participants: int,
    student: int,
    teachers: Sequence[int],
    temperature: float,
    alpha: float,
    aggregation: str,
    *,
    words: tuple[str, str] = ("student", "teacher"),
) -> None:
    """The checks every KD round shares (a pair trial, a neighbourhood round): who learns from
    whom, T, α and the aggregation. ``words`` names the two roles in the messages (a
    neighbourhood round's are the client and its neighbours)."""
    me, them = words
    if not 0 <= student < participants:
        raise TrialError(f"{me} {student} is not a participant: choose 0..{participants - 1}")
    if not teachers:
        raise TrialError(f"{me} {student} has no {them}: pass at least one")
    twice = sorted({t for t in teachers if list(teachers).count(t) > 1})
    if twice:
        raise TrialError(f"{them}s {list(teachers)} name participant {twice[0]} twice: list "
                         "each once")  # fmt: skip
    for t in teachers:
        if not 0 <= t < participants:
            raise TrialError(f"{them} {t} is not a participant: choose 0..{participants - 1}")
        if t == student:
            raise TrialError(f"{me} {student} cannot be its own {them}: drop it from the {them}s")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise TrialError(f"temperature {temperature} must be a finite number > 0")
    if not 0.0 <= alpha <= 1.0:
        raise TrialError(f"alpha {alpha} must lie in [0, 1]")
    if aggregation not in AGGREGATIONS:
        raise TrialError(
            f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}"
        )


def _check_args(
    bundle: FederationBundle,
    student: int,
    teachers: Sequence[int],
    temperature: float,
    alpha: float,
    transfer_set: str,
    aggregation: str,
) -> None:
    check_round_args(bundle.participants, student, teachers, temperature, alpha, aggregation)
    if transfer_set not in TRANSFER_SETS:
        raise TrialError(
            f"unknown transfer set {transfer_set!r}: choose one of {', '.join(TRANSFER_SETS)}"
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
    sources = list(teachers) + ([student] if transfer_set == "public+self" else [])
    evaluate = RoundEvaluator(bundle, student, recipe, device)
    with seeded(seed, device) as gen:
        model = bundle.model(student, device)
        loss = make_step_loss(
            bundle.on(device), student, sources, transfer_set=transfer_set,
            temperature=temperature, alpha=alpha, aggregation=aggregation, divergence=div,
            batch_size=recipe.batch_size, generator=gen, device=device,
        )  # fmt: skip
        steps = train_round(
            model, loss, evaluate, head=1, recipe=recipe, generator=gen, device=device,
            on_eval=on_eval, precision=precision,
            context=f"T={temperature}, alpha={alpha}, {divergence}, {transfer_set}",
        )  # fmt: skip
    return TrialResult.after_round(
        bundle, student, teachers, evaluate.final, started=started, steps=steps, device=device
    )
