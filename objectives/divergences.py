"""The five divergences D(q, p) of docs/design.md §2 as pure tensor functions, and their registry.

Every function takes log-probabilities — ``log_q`` of the target (teacher) and ``log_p`` of the
student, shape ``[..., classes]`` — and returns one value per row (shape ``[...]``). Working on
log-probabilities instead of probabilities is what keeps them finite with finite gradients at the
extremes (logits of ±1e4 at T = 0.05 give probabilities that underflow to exactly 0, while their
logs stay finite). Reduction over the batch is the caller's job (``kd_term`` takes the mean), so
every divergence is weighted alike against the cross-entropy term.

``teacher_target`` and ``kd_term`` work in float64: the KD term is only ``[batch, classes]``, tiny
next to the network, and float32 loses JS/SED/TD to cancellation when teacher and student nearly
agree (a small divergence computed as a difference of O(1) terms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .errors import ConfigError

Divergence = Callable[[Tensor, Tensor], Tensor]

_LOG2 = math.log(2.0)


def ce(log_q: Tensor, log_p: Tensor) -> Tensor:
    """Cross-entropy −Σ q log p."""
    return -(log_q.exp() * log_p).sum(-1)


def kl(log_q: Tensor, log_p: Tensor) -> Tensor:
    """Kullback–Leibler Σ q log(q / p); a q that underflowed to 0 contributes 0·finite = 0."""
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def _log_mid(log_q: Tensor, log_p: Tensor) -> Tensor:
    """log m with m = (q + p) / 2, without leaving log space."""
    return torch.logaddexp(log_q, log_p) - _LOG2


def js(log_q: Tensor, log_p: Tensor) -> Tensor:
    """Jensen–Shannon ½ KL(q ‖ m) + ½ KL(p ‖ m)."""
    log_m = _log_mid(log_q, log_p)
    return 0.5 * (kl(log_q, log_m) + kl(log_p, log_m))


def sed(log_q: Tensor, log_p: Tensor) -> Tensor:
    """Structural entropic distance C(m) / √(C(q) C(p)) − 1.

    With C(x) = exp(H(x)) the ratio is exp(H(m) − ½H(q) − ½H(p)) = exp(JS(q, p)), so SED =
    expm1(JS): exact, bounded by 1 (JS ≤ log 2), and without the overflow of exp(H) itself.
    """
    return torch.expm1(js(log_q, log_p))


def td(log_q: Tensor, log_p: Tensor) -> Tensor:
    """Triangular divergence 1 − Σ 2qp / (q + p), terms with q + p = 0 counting 0.

    Since Σq = Σp = 1 this equals Σ (q − p)² / (2(q + p)) = ½ Σ (q + p)·tanh²((log q − log p)/2):
    a sum of non-negative terms (no cancellation near 0) with no division, so a pair of
    underflowed probabilities gives 0 and a finite gradient instead of 0/0.
    """
    log_s = torch.logaddexp(log_q, log_p)
    return 0.5 * (log_s.exp() * torch.tanh(0.5 * (log_q - log_p)).square()).sum(-1)


DIVERGENCES: dict[str, Divergence] = {"ce": ce, "kl": kl, "js": js, "sed": sed, "td": td}
AGGREGATIONS = ("avg", "sum")


def get_divergence(name: str) -> Divergence:
    """Look a divergence up by name; an unknown name raises an error that lists the known ones."""
    try:
        return DIVERGENCES[name]
    except KeyError:
        known = ", ".join(DIVERGENCES)
        raise ConfigError(f"unknown divergence {name!r}: choose one of {known}") from None


def teacher_target(teacher_logits: Tensor, temperature: float, aggregation: str) -> Tensor:
    """Soft targets of K teachers at temperature T as log-probabilities.

    ``teacher_logits`` is ``[K, batch, classes]``. ``avg`` returns ``[1, batch, classes]``: the log
    of the mean of the K softmaxes (logsumexp keeps it finite). ``sum`` returns
    ``[K, batch, classes]``, one target per teacher. With K = 1 both are the same.
    """
    log_t = torch.log_softmax(teacher_logits.double() / temperature, dim=-1)
    if aggregation == "avg":
        return (torch.logsumexp(log_t, dim=0) - math.log(log_t.shape[0])).unsqueeze(0)
    if aggregation == "sum":
        return log_t
    raise ConfigError(
        f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}"
    )


def kd_term(
    log_targets: Tensor, student_logits: Tensor, temperature: float, divergence: Divergence
) -> Tensor:
    """T² · mean over the batch of Σ_k D(target_k, p_s): the KD term of docs/design.md §2 before α.

    ``log_targets`` comes from ``teacher_target`` (``[K', batch, classes]``); for ``avg`` K' = 1 so
    the sum has one term.
    """
    log_p = torch.log_softmax(student_logits.double() / temperature, dim=-1)
    per_row = divergence(log_targets.double(), log_p.unsqueeze(0)).sum(0)
    return (temperature * temperature * per_row.mean()).to(torch.float32)


def kd_loss(
    teacher_logits: Sequence[Tensor] | Tensor,
    student_logits: Tensor,
    temperature: float,
    divergence: str = "kl",
    aggregation: str = "avg",
) -> Tensor:
    """Convenience for one batch: T² · mean D(teachers' soft targets, student) from raw logits."""
    stacked = (
        teacher_logits if isinstance(teacher_logits, Tensor) else torch.stack(list(teacher_logits))
    )
    if stacked.dim() == 2:
        stacked = stacked.unsqueeze(0)
    target = teacher_target(stacked, temperature, aggregation)
    return kd_term(target, student_logits, temperature, get_divergence(divergence))
