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
from tuner.kinds import KINDS, kind_of
from tuner.read.decision import LEVEL, difference_ci, look_levels, verdict
from tuner.search.best import best_trial, default_for, defaults
from tuner.store.adapter import FrozenStudy, study_id_of
from tuner.store.db import count_trials, trial_spans
from tuner.store.storage import mask
from tuner.strategies import strategy_of

#: The user attr on a pair study naming the candidates and seeds its confirmation runs (the run's
#: ``--confirm K`` and ``dkd-tune confirm`` alike): with the confirmation study's trials, the one
#: record every view reads the pair's answer from (:func:`recommendation`).
PLAN_ATTR = "confirmation"
#: The --min-gain of a run stored before the flag existed: its answer rested on the test alone.
LEGACY_MIN_GAIN = 0.0


def studies_of(
    storage: optuna.storages.RDBStorage, kind: str | None = None, federation: str | None = None
) -> list[FrozenStudy]:
    """dkd-tune's studies (of one kind, of one federation), sorted by federation and name."""
    studies = [
        s
        for s in storage.get_all_studies()
        if "federation_hash" in s.user_attrs
        and (found := kind_of(s.user_attrs)) is not None
        and (kind is None or found.name == kind)
        and (federation is None or s.user_attrs.get("federation") == federation)
    ]
    return sorted(studies, key=lambda s: (s.user_attrs["federation"], _order(s)))


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
) -> list[FrozenStudy]:
    """The studies of the one federation in the storage (or of ``federation``); one line if
    there is none, or several and no ``--federation``."""
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
    return studies


def _value(trial: FrozenTrial | None) -> float | None:
    return None if trial is None else trial.value


def _counts(c: Any) -> dict[str, int]:
    return {"finished": c.finished, "complete": c.complete, "pruned": c.pruned,
            "running": c.running, "failed": c.failed}  # fmt: skip


def pair_rows(
    storage: optuna.storages.RDBStorage,
    federation: str | None = None,
    recommended: dict[str, dict[str, Any] | None] | None = None,
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
        budget = s.user_attrs.get("run", {}).get("budget")
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
            **recommendation_fields(recommended.get(s.study_name)),
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
                "budget": a.get("run", {}).get("budget"),
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


def confirmation_runs(
    trials: Sequence[FrozenTrial], candidate: int, seeds: Sequence[int]
) -> dict[str, Any] | None:
    """One candidate's confirmation over ``seeds`` (per-seed gain, accuracy, forgetting, their
    mean and std), from a confirmation study's trials; None while a seed is missing."""
    done = {
        t.params["seed"]: t
        for t in trials
        if t.state == TrialState.COMPLETE and t.params.get("candidate") == candidate
    }
    if any(s not in done for s in seeds):
        return None
    out = {
        "gain": [float(done[s].value) for s in seeds],
        "accuracy_after": [float(done[s].user_attrs["accuracy_after"]) for s in seeds],
        "forgetting": [float(done[s].user_attrs["forgetting"]) for s in seeds],
        "trials": [done[s].number for s in seeds],
        "seconds": sum(float(done[s].user_attrs.get("seconds", 0.0)) for s in seeds),
        "device": done[seeds[0]].user_attrs.get("device"),
    }
    out["gain_mean"] = statistics.fmean(out["gain"])
    out["gain_std"] = statistics.stdev(out["gain"]) if len(seeds) >= 2 else None
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) >= 2 else None)


def recommendation(
    study: FrozenStudy,
    trials: Sequence[FrozenTrial],
    confirmations: Sequence[FrozenTrial],
    max_forgetting: float | None = None,
    level: float = LEVEL,
    *,
    min_gain: float,
) -> dict[str, Any] | None:
    """The configuration to use for a pair, from its confirmed candidates (docs/design.md §4):
    the candidate with the best mean gain over the fresh seeds (the defaults among them; tuned
    ones only if they forget at most ``max_forgetting`` pp, where given) is recommended only if
    it passes :func:`decide` against its same-student default (at least ``min_gain`` pp more,
    p below its look's level, tuner.read.decision); otherwise that default is. A sequential
    plan decides at its first look when that is clear. None while the runs a look needs are
    incomplete."""
    return confirmation_state(study, trials, confirmations, max_forgetting, level,
                              min_gain=min_gain)[1]  # fmt: skip


def confirmation_state(
    study: FrozenStudy,
    trials: Sequence[FrozenTrial],
    confirmations: Sequence[FrozenTrial],
    max_forgetting: float | None = None,
    level: float = LEVEL,
    *,
    min_gain: float,
) -> tuple[list[int], dict[str, Any] | None]:
    """Where a pair's confirmation stands: the fresh seeds it needs run so far (those of its
    first look, then all of them while the first look does not decide) and its recommendation
    (None while those runs are incomplete). ([], None) without a plan."""
    plan = study.user_attrs.get(PLAN_ATTR)
    if not plan:
        return [], None
    planned = plan.get("looks") or [len(plan["seeds"])]  # a fixed plan: one look at every seed
    levels = look_levels(len(planned), level)
    for i, n in enumerate(planned):
        seeds = plan["seeds"][:n]
        last = i == len(planned) - 1
        rec = _at_look(study, trials, confirmations, plan["candidates"], seeds, max_forgetting,
                       levels[i], min_gain, last)  # fmt: skip
        if rec is None or rec["beyond_noise"] is not None:
            if rec is not None:
                rec["looks"] = planned
            return seeds, rec
    raise AssertionError("the last look always decides")


def _at_look(
    study: FrozenStudy,
    trials: Sequence[FrozenTrial],
    confirmations: Sequence[FrozenTrial],
    candidates: Sequence[int],
    seeds: Sequence[int],
    max_forgetting: float | None,
    level: float,
    min_gain: float,
    last: bool,
) -> dict[str, Any] | None:
    """The answer over ``seeds`` (``beyond_noise`` None: not decided at this look), None while
    a run is missing."""
    by_number = {t.number: t for t in trials}
    confirmed = {}
    for number in candidates:
        runs = confirmation_runs(confirmations, number, seeds)
        if runs is None or number not in by_number:
            return None
        confirmed[number] = runs
    a, b = study.user_attrs["pair"]

    def entry(number: int) -> dict[str, Any]:
        t, runs = by_number[number], confirmed[number]
        position = t.params["position"]
        forgetting, forgetting_std = _mean_std(runs["forgetting"])
        return {
            "trial": number,
            "params": dict(t.params),
            "student": a if position == "a" else b,
            "teacher": b if position == "a" else a,
            "gain": runs["gain"],
            "gain_mean": runs["gain_mean"],
            "gain_std": runs["gain_std"],
            "accuracy_mean": statistics.fmean(runs["accuracy_after"]),
            "forgetting_mean": forgetting,
            "forgetting_std": forgetting_std,
            "single_trial_gain": t.value,
        }

    entries = [entry(n) for n in candidates]
    is_default = {e["trial"]: "default" in by_number[e["trial"]].user_attrs for e in entries}
    defaults = {e["params"]["position"]: e for e in entries if is_default[e["trial"]]}
    if not defaults:
        return None
    # Every candidate with a default to compare with; the defaults compete as they are, the
    # tuned ones only within the forgetting bound.
    admitted = [
        e for e in entries
        if e["params"]["position"] in defaults
        and (is_default[e["trial"]] or max_forgetting is None
             or e["forgetting_mean"] <= max_forgetting)
    ]  # fmt: skip
    best = max(admitted, key=lambda e: (e["gain_mean"], -e["trial"]))
    default = defaults[best["params"]["position"]]
    tuned = not is_default[best["trial"]]
    # No tuned candidate ahead of its default: the default, at any look.
    beyond, p_value = (
        verdict(best["gain"], default["gain"], min_gain, level, last) if tuned else (False, None)
    )
    chosen = best if beyond else default
    gain_rule = f", at least {min_gain:g} pp" if min_gain else ""
    return {
        "seeds": list(seeds),
        "recommended": chosen,
        "best": best,  # the candidate tested against the default (the best confirmed mean)
        "default": default,
        "candidates": entries,
        "difference": best["gain_mean"] - default["gain_mean"] if tuned else None,
        "difference_ci": difference_ci(best["gain"], default["gain"], level) if tuned else None,
        "p_value": p_value,
        "beyond_noise": beyond,
        "min_gain": min_gain,
        "level": level,
        "criterion": f"one-sided paired t-test over {len(seeds)} fresh seeds, p < {level:g}"
        + gain_rule,
        "max_forgetting": max_forgetting,
    }


def recommendations(
    storage: optuna.storages.RDBStorage, studies: Sequence[FrozenStudy], level: float = LEVEL
) -> dict[str, dict[str, Any] | None]:
    """Each pair study's recommendation (None where its confirmation is missing)."""
    return {name: rec for name, (_, rec) in confirmation_states(storage, studies, level).items()}


def confirmation_states(
    storage: optuna.storages.RDBStorage, studies: Sequence[FrozenStudy], level: float = LEVEL
) -> dict[str, tuple[list[int], dict[str, Any] | None]]:
    """Each pair study's :func:`confirmation_state` (the seeds it needs, its recommendation)."""
    out: dict[str, tuple[list[int], dict[str, Any] | None]] = {}
    names = {s.study_name: s for s in storage.get_all_studies()}
    for s in studies:
        if not s.user_attrs.get(PLAN_ATTR):
            out[s.study_name] = ([], None)
            continue
        confirm_name = _confirm_name(s)
        trials = storage.get_all_trials(study_id_of(s), deepcopy=False)
        confirmations = (
            storage.get_all_trials(study_id_of(names[confirm_name]), deepcopy=False)
            if confirm_name in names
            else []
        )
        run = s.user_attrs.get("run", {})
        out[s.study_name] = confirmation_state(
            s, trials, confirmations, run.get("max_forgetting"), level,
            min_gain=run.get("min_gain", LEGACY_MIN_GAIN)
        )
    return out


def recommendation_fields(rec: dict[str, Any] | None) -> dict[str, Any]:
    """A pair row's recommendation columns (None where no confirmation is complete)."""
    keys = ("recommended_params", "recommended_trial", "recommended_student",
            "recommended_teacher", "recommended_is_default", "recommended_gain_mean",
            "recommended_gain_std", "recommended_forgetting_mean", "recommended_forgetting_std",
            "confirmed_default_gain_mean", "confirmed_default_gain_std",
            "confirmed_default_forgetting_mean", "confirmed_difference",
            "confirmed_difference_ci", "p_value", "level", "beyond_noise", "min_gain",
            "seeds")  # fmt: skip
    if rec is None:
        return dict.fromkeys(keys)
    r, d = rec["recommended"], rec["default"]
    return {
        "recommended_params": r["params"],
        "recommended_trial": r["trial"],
        "recommended_student": r["student"],
        "recommended_teacher": r["teacher"],
        "recommended_is_default": r is d,
        "recommended_gain_mean": r["gain_mean"],
        "recommended_gain_std": r["gain_std"],
        "recommended_forgetting_mean": r["forgetting_mean"],
        "recommended_forgetting_std": r["forgetting_std"],
        "confirmed_default_gain_mean": d["gain_mean"],
        "confirmed_default_gain_std": d["gain_std"],
        "confirmed_default_forgetting_mean": d["forgetting_mean"],
        "confirmed_difference": rec["difference"],
        "confirmed_difference_ci": rec["difference_ci"],
        "p_value": rec["p_value"],
        "level": rec["level"],  # the deciding look's test level (tuner.read.decision)
        "min_gain": rec["min_gain"],
        "beyond_noise": rec["beyond_noise"],
        "seeds": len(rec["seeds"]),
    }
