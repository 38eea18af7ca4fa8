"""Warm start across pairs (``--warm-start``, docs/design.md §4): a pair study's early trials
try the configurations that other pairs of the same federation found better than their default.

When: the claim whose trial number is :func:`warm_at` (the defaults, then ``WARM_AFTER`` sampled
trials) enqueues up to ``WARM_TRIALS`` configurations. Trial numbers are unique per study, so
exactly one claim, in one process, does it — however many workers share the study — and a rerun
never does it again (a claim interrupted before its enqueue leaves the study cold); never more
than the study's budget has room for. Waiting that long lets the other pairs, which the pool
serves in lockstep, run trials of their own first.

What: every COMPLETE non-default trial of another pair study with the same federation hash,
ranked by how far it beat its own same-student default; a configuration is carried over by the
student's *role* (the weaker or the stronger member, by accuracy before KD), since "which member
learns" means that across pairs, not the letter a or b. Configurations outside this study's
space, or already tried here, are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.search.best import improvements
from tuner.search.space import MULTI_TEACHER, SearchSpace
from tuner.store.adapter import fixed_params, storage_of, study_id_of

#: Sampled trials a study runs before it takes configurations from the other pairs.
WARM_AFTER = 3
#: Configurations a study takes from the others (once).
WARM_TRIALS = 3
#: The user attr naming where a warm-start trial's configuration came from.
WARM_ATTR = "warm_from"
_PARAMS = ("temperature", "alpha", "divergence", "transfer_set", "position", "aggregation")


def warm_at(space: SearchSpace) -> int:
    """The trial number whose claim enqueues the warm start."""
    return len(space.defaults()) + WARM_AFTER


def role(mine: float, theirs: float) -> str:
    """The student's role by accuracy before KD: ``weaker``, ``stronger`` or ``equal``."""
    return "weaker" if mine < theirs else "stronger" if mine > theirs else "equal"


def _role(attrs: dict[str, Any], position: str) -> str:
    """The role of the pair study's member at ``position`` (its attrs hold both accuracies)."""
    mine, other = (("accuracy_a", "accuracy_b") if position == "a"
                   else ("accuracy_b", "accuracy_a"))  # fmt: skip
    return role(attrs[mine], attrs[other])


def _position(attrs: dict[str, Any], role: str) -> str:
    return "a" if _role(attrs, "a") == role else "b"


def fits(params: dict[str, Any], space: SearchSpace) -> bool:
    """Whether a configuration lies in the study's space (ranges and choices)."""
    if not (space.temperature[0] <= params["temperature"] <= space.temperature[1]
            and space.alpha[0] <= params["alpha"] <= space.alpha[1]):  # fmt: skip
        return False
    if "aggregation" in params and params["aggregation"] not in space.aggregation:
        return False
    return all(params[k] in getattr(space, k) for k in ("divergence", "transfer_set", "position"))


#: Another pair study of the federation as a study reads it: (name, user attrs, trials).
Sibling = tuple[str, dict[str, Any], Sequence[FrozenTrial]]


def carried(own: dict[str, Any], attrs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The configuration ``params`` of the pair study with attrs ``attrs`` in the terms of the
    study with attrs ``own``: its student's role kept (the position that has it here)."""
    out = {p: params[p] for p in _PARAMS if p in params}
    out["position"] = _position(own, _role(attrs, params["position"]))
    if out["transfer_set"] not in MULTI_TEACHER:
        out.pop("aggregation", None)
    return out


def tried(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """The configurations a study has run or queued (suggested, or enqueued not yet run)."""
    return [dict(t.params) for t in trials] + [fixed_params(t) or {} for t in trials]


def choose(
    own: dict[str, Any],
    own_trials: Sequence[FrozenTrial],
    space: SearchSpace,
    others: Sequence[Sibling],
    k: int = WARM_TRIALS,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Up to ``k`` (params, user attrs) to enqueue in the study with attrs ``own``, from the
    ``others`` (name, attrs, trials): the largest improvements over a default first."""
    ranked = []
    for name, attrs, trials in others:
        for gain, t in improvements(trials):
            ranked.append((-gain, name, t.number, carried(own, attrs, t.params)))
    return take(ranked, own_trials, space, k,
                lambda name, number: {WARM_ATTR: f"{name}#{number}", "attempt": 1})  # fmt: skip


#: A configuration ranked for another study: (sort key, sibling name, its trial, params).
Ranked = tuple[float, str, int, dict[str, Any]]


def take(
    ranked: Sequence[Ranked],
    own_trials: Sequence[FrozenTrial],
    space: SearchSpace,
    k: int,
    attrs: Callable[[str, int], dict[str, Any]],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The first ``k`` of ``ranked`` (by key, then name and trial: the same on every worker)
    that fit ``space`` and the study has not tried, each with the user attrs ``attrs`` gives
    for its source (sibling name, trial number)."""
    seen = tried(own_trials)
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for _key, name, number, params in sorted(ranked, key=lambda r: r[:3]):
        if len(out) == k:
            break
        if fits(params, space) and params not in seen:
            seen.append(params)
            out.append((params, attrs(name, number)))
    return out


def siblings(
    study: optuna.Study, is_pair: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, Any], list[Sibling]]:
    """The study's own user attrs, and the other pair studies (those whose attrs satisfy
    ``is_pair``, the kind's rule) with the same federation hash in its storage."""
    storage = storage_of(study)
    own_id = study_id_of(study)
    own = storage.get_study_user_attrs(own_id)
    others = [
        (s.study_name, s.user_attrs, storage.get_all_trials(study_id_of(s), deepcopy=False))
        for s in storage.get_all_studies()
        if study_id_of(s) != own_id
        and is_pair(s.user_attrs)
        and s.user_attrs.get("federation_hash") == own.get("federation_hash")
    ]
    return own, others


def enqueue_warm(
    study: optuna.Study,
    space: SearchSpace,
    is_pair: Callable[[dict[str, Any]], bool],
    k: int = WARM_TRIALS,
) -> int:
    """Enqueue up to ``k`` warm-start configurations for ``study`` from the other pair studies
    (those whose attrs satisfy ``is_pair``, the kind's rule) of its federation; return how many
    (called once per study, by the claim numbered :func:`warm_at`)."""
    if k <= 0:
        return 0
    own, others = siblings(study, is_pair)
    todo = choose(own, study.get_trials(deepcopy=False), space, others, k)
    for params, attrs in todo:
        study.enqueue_trial(params, user_attrs=attrs)
    return len(todo)


__all__ = [
    "WARM_AFTER",
    "WARM_ATTR",
    "WARM_TRIALS",
    "Ranked",
    "Sibling",
    "carried",
    "choose",
    "enqueue_warm",
    "fits",
    "role",
    "siblings",
    "take",
    "tried",
    "warm_at",
]
