"""The read side: what the studies of every kind hold, read back from the storage (docs/design.md
§4–5). One best-trial rule, one federation check, one function of rows per kind; ``tables``,
``export``, ``report_data``/``report`` and ``notes`` are views over what is read here."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives import AGGREGATIONS, DIVERGENCES
from tuner.errors import StorageError, UsageError
from tuner.kinds import KINDS, federation_clash, has_left, kind_of
from tuner.kinds.growth import GROWN_FROM
from tuner.read.answer import Answer, ConfirmationState, answer_fields, confirmation_state
from tuner.read.decision import LEVEL
from tuner.search.best import best_trial, default_for, defaults
from tuner.store.adapter import FrozenStudy, study_id_of
from tuner.store.db import count_trials, trial_spans
from tuner.store.records import LEGACY_MIN_GAIN, ConfirmationPlan, RunRecord, budget_of
from tuner.store.storage import mask
from tuner.strategies import strategy_of


def studies_of(
    storage: optuna.storages.RDBStorage, kind: str | None = None, federation: str | None = None
) -> list[FrozenStudy]:
    """dkd-tune's studies (of one kind, of one federation: ``federation`` is its name or its
    federation hash), sorted by federation (name, then hash) and name. A study whose participant
    left its federation (tuner.kinds.growth) is no longer one of them."""
    studies = [
        s
        for s in storage.get_all_studies()
        if "federation_hash" in s.user_attrs
        and not has_left(s.user_attrs)
        and (found := kind_of(s.user_attrs)) is not None
        and (kind is None or found.name == kind)
        and (federation is None or federation in federation_of(s.user_attrs))
    ]
    return sorted(studies, key=lambda s: (federation_of(s.user_attrs), _order(s)))


def federation_of(attrs: dict[str, Any]) -> tuple[str, str]:
    """A stored study's federation: its name and federation hash. The read side groups by both,
    so two configs stored under one name (which a run refuses unless it grows the
    federation, tuner.kinds.growth) are never pooled."""
    return str(attrs.get("federation", "")), str(attrs["federation_hash"])


def _order(study: FrozenStudy) -> tuple:
    a = study.user_attrs
    return tuple(a.get("pair", ())), a.get("client", -1), study.study_name


def pair_studies(
    storage: optuna.storages.RDBStorage, federation: str | None = None
) -> list[FrozenStudy]:
    """The pair studies, sorted by federation and pair."""
    return studies_of(storage, "pair", federation)


def one_federation(
    storage: optuna.storages.RDBStorage,
    url: str,
    federation: str | None,
    *,
    kind: str | None = None,
    what: str = "dkd-tune pair studies",
    fix: str = "run dkd-tune first or pass --storage",
    writes: bool = False,
) -> list[FrozenStudy]:
    """The studies of the one federation in the storage (or of ``federation``, a name or a
    hash); one line if there is none, or several and no ``--federation``. ``writes`` (a worker,
    ``confirm``): refused, before anything is written, where the federation's name is stored
    under another hash too (tuner.kinds.growth.federation_clash)."""
    studies = studies_of(storage, kind, federation)
    names = sorted({s.user_attrs["federation"] for s in studies})
    if not names:
        raise StorageError(
            f"no {what} in {mask(url)}"
            + (f" for federation {federation}" if federation else "")
            + f": {fix}"
        )
    if len(names) > 1:
        raise UsageError(
            f"the storage holds several federations ({', '.join(names)}): pass --federation NAME"
        )
    if writes:
        reason = federation_clash(names[0], studies_of(storage, None, names[0]), url)
        if reason:
            raise StorageError(reason)
    hashes = sorted({federation_of(s.user_attrs)[1] for s in studies})
    if len(hashes) > 1:
        raise UsageError(
            f"federation {names[0]} is stored in {mask(url)} under {len(hashes)} federation "
            f"hashes ({', '.join(hashes)}): different configs under one name, never pooled; pass "
            "--federation HASH to read one"
        )
    return studies


def _value(trial: FrozenTrial | None) -> float | None:
    return None if trial is None else trial.value


def _counts(c: Any) -> dict[str, int]:
    return {"finished": c.finished, "complete": c.complete, "pruned": c.pruned,
            "running": c.running, "failed": c.failed}  # fmt: skip


def pair_rows(
    storage: optuna.storages.RDBStorage,
    federation: str | None = None,
    recommended: dict[str, Answer | None] | None = None,
) -> list[dict]:
    """One dict per pair study: counts, the best trial and the same-position default, and its
    answer (``recommended``: the studies' :func:`recommendations` where the caller has them, so
    a command computes each pair's answer once)."""
    studies = pair_studies(storage, federation)
    counts = count_trials(storage, [study_id_of(s) for s in studies])
    if recommended is None:
        recommended = recommendations(storage, studies)
    confirming = {s.study_name: _confirm_name(s) for s in studies}
    spans = trial_spans(storage, [*confirming, *confirming.values()])
    rows = []
    for s in studies:
        everything = storage.get_all_trials(study_id_of(s), deepcopy=False)
        trials = [t for t in everything if t.state == TrialState.COMPLETE]
        a, b = s.user_attrs["pair"]
        by_position = defaults(trials)
        budget = budget_of(s.user_attrs)
        strategy = strategy_of(s.user_attrs)
        best = best_trial(trials)
        row: dict[str, Any] = {
            "study": s.study_name,
            "federation": s.user_attrs["federation"],
            "federation_hash": s.user_attrs["federation_hash"],
            "pair": f"{a}-{b}",
            **_counts(counts[study_id_of(s)]),
            "budget": budget,
            "strategy": strategy.name,
            "grown_from": s.user_attrs.get(GROWN_FROM) or None,  # the federation's earlier hashes
            **strategy.summary(everything, budget),
            "student": None,
            "teacher": None,
            "trial": None,
            "best_params": None,
            "best_gain": None,
            "default_gain": None,
            "improvement": None,
            "default_gain_a": _value(by_position.get("a")),
            "default_gain_b": _value(by_position.get("b")),
            **answer_fields(recommended.get(s.study_name)),
            **_span(spans, s.study_name, confirming[s.study_name]),
        }
        if best is not None:
            default = default_for(trials, best)
            row.update(
                student=best.user_attrs.get("student"),
                teacher=best.user_attrs.get("teacher"),
                trial=best.number,
                best_params=dict(best.params),
                best_gain=best.value,
                default_gain=_value(default),
                improvement=None if default is None else best.value - default.value,
            )
        rows.append(row)
    return rows


def _confirm_name(study: FrozenStudy) -> str:
    """The name of a pair study's confirmation study (it may not exist)."""
    return KINDS["confirm"].study_name(study.user_attrs["federation"], study.user_attrs["pair"])


def _span(spans: dict, *names: str) -> dict[str, str | None]:
    """A pair row's wall-clock span over its study and its confirmation study: the first trial's
    start and the last trial's completion (ISO 8601, None before any), what status's wall time
    is read from."""
    starts = [spans[n][0] for n in names if n in spans and spans[n][0] is not None]
    ends = [spans[n][1] for n in names if n in spans and spans[n][1] is not None]
    return {"first_trial_start": min(starts).isoformat() if starts else None,
            "last_trial_complete": max(ends).isoformat() if ends else None}  # fmt: skip


def client_rows(storage: optuna.storages.RDBStorage, federation: str | None = None) -> list[dict]:
    """One dict per client study (neighbourhood mode): counts, the best trial, the default."""
    studies = studies_of(storage, "neighbourhood", federation)
    counts = count_trials(storage, [study_id_of(s) for s in studies])
    rows = []
    for s in studies:
        trials = storage.get_all_trials(
            study_id_of(s), deepcopy=False, states=(TrialState.COMPLETE,)
        )
        default = next(iter(defaults(trials).values()), None)
        best = best_trial(trials)
        a = s.user_attrs
        rows.append(
            {
                "study": s.study_name,
                "mode": "neighbourhood",
                "federation": a["federation"],
                "federation_hash": a["federation_hash"],
                "client": a["client"],
                "neighbours": a["neighbours"],
                "round_transfer_set": a["search"]["transfer_set"],
                **_counts(counts[study_id_of(s)]),
                "budget": budget_of(a),
                "accuracy_before": a.get("accuracy"),
                "trial": None if best is None else best.number,
                "best_params": None if best is None else dict(best.params),
                "best_gain": None if best is None else best.value,
                "best_accuracy": None if best is None else best.user_attrs.get("accuracy_after"),
                "default_gain": _value(default),
                "improvement": None
                if best is None or default is None
                else best.value - default.value,
            }
        )
    return rows


@dataclass(frozen=True)
class Cell:
    """One row of the compare table for one federation: a divergence × aggregation over seeds."""

    federation: str
    partition: str
    divergence: str
    aggregation: str
    accuracies: tuple[float, ...]  # per seed: the clients' mean head-2 accuracy, %
    gains: tuple[float, ...]  # per seed: the clients' mean gain, pp
    seconds: tuple[float, ...]  # per seed: seconds of the whole round (every client)

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def accuracy(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def accuracy_std(self) -> float | None:
        return statistics.stdev(self.accuracies) if self.n > 1 else None

    @property
    def gain(self) -> float | None:
        return statistics.fmean(self.gains) if self.gains else None

    @property
    def seconds_per_round(self) -> float | None:
        return statistics.fmean(self.seconds) if self.seconds else None


def read_cells(
    storage: optuna.storages.RDBStorage, names: Sequence[str] | None = None
) -> list[Cell]:
    """The compare table's cells from the stored compare studies (all, or these federations)."""
    studies = sorted(studies_of(storage, "compare"), key=lambda s: study_id_of(s))  # run order
    if names is not None:
        order = {n: i for i, n in enumerate(names)}
        studies = sorted(
            (s for s in studies if s.user_attrs["federation"] in order),
            key=lambda s: order[s.user_attrs["federation"]],
        )
    cells = []
    for s in studies:
        trials = storage.get_all_trials(
            study_id_of(s), deepcopy=False, states=(TrialState.COMPLETE,)
        )
        for divergence in DIVERGENCES:
            for aggregation in AGGREGATIONS:
                mine = sorted(
                    (t for t in trials if t.params["divergence"] == divergence
                     and t.params["aggregation"] == aggregation),
                    key=lambda t: t.params["seed"],
                )  # fmt: skip
                cells.append(
                    Cell(
                        federation=s.user_attrs["federation"],
                        partition=s.user_attrs["partition"],
                        divergence=divergence,
                        aggregation=aggregation,
                        accuracies=tuple(t.value for t in mine),
                        gains=tuple(t.user_attrs["gain"] for t in mine),
                        seconds=tuple(t.user_attrs["seconds"] for t in mine),
                    )
                )
    return cells


def recommendations(
    storage: optuna.storages.RDBStorage, studies: Sequence[FrozenStudy], level: float = LEVEL
) -> dict[str, Answer | None]:
    """Each pair study's answer (None where its confirmation is missing)."""
    return {name: state.answer
            for name, state in confirmation_states(storage, studies, level).items()}  # fmt: skip


def confirmation_states(
    storage: optuna.storages.RDBStorage, studies: Sequence[FrozenStudy], level: float = LEVEL
) -> dict[str, ConfirmationState]:
    """Each pair study's :func:`~tuner.read.answer.confirmation_state` (the seeds it needs, its
    answer)."""
    out: dict[str, ConfirmationState] = {}
    names = {s.study_name: s for s in storage.get_all_studies()}
    for s in studies:
        if ConfirmationPlan.from_attrs(s.user_attrs) is None:
            out[s.study_name] = ConfirmationState()
            continue
        confirm_name = _confirm_name(s)
        trials = storage.get_all_trials(study_id_of(s), deepcopy=False)
        confirmations = (
            storage.get_all_trials(study_id_of(names[confirm_name]), deepcopy=False)
            if confirm_name in names
            else []
        )
        # A pair study always holds its run's record; one without (its creator died before)
        # has no plan either.
        run = RunRecord.from_attrs(s.user_attrs)
        out[s.study_name] = confirmation_state(
            s, trials, confirmations, None if run is None else run.max_forgetting, level,
            min_gain=LEGACY_MIN_GAIN if run is None else run.answer_min_gain,
        )
    return out
