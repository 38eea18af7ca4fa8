"""The numbers of a run's report, read back from the pair studies (the page is ``report.py``).

Per pair: its best configuration, the default (T = 1, α = 0.5, kl, public) for the same student,
and the trial-to-trial noise the two are compared with; per direction (student ← teacher): the
default and the best for the heatmaps; pooled over pairs: the Alballa–Canini poster's figures.
Where ``dkd-tune confirm`` re-ran a pair's best and default with fresh seeds, the means over those
seeds replace the single tuning trials (the best of many single trials is biased upwards).

Noise (trial-to-trial): a confirmed pair's noise is the pooled sample standard deviation of its
best's and its default's gain over the confirm seeds, √((s_best² + s_default²) / 2): the spread
one trial of either has from its seed alone (pooling both doubles the degrees of freedom of a
k-seed estimate). A pair without a confirmation uses the root mean square of the confirmed pairs'
noise; with no pair confirmed at all, ``NOISE_FALLBACK_PP``.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.formats import config_line
from tuner.read.answer import Answer
from tuner.read.results import (
    client_rows,
    one_federation,
    pair_rows,
    read_cells,
    recommendations,
)
from tuner.search.best import best_trial, complete, defaults
from tuner.search.space import DEFAULT_PARAMS
from tuner.search.warm import role
from tuner.store.adapter import study_id_of
from tuner.store.records import ConfirmationPlan, budget_of, is_default
from tuner.store.storage import mask
from tuner.strategies import strategy_of

#: Noise (pp) assumed before any pair is confirmed: on the embedded Fashion-MNIST default, the
#: root mean square of the 45 confirmed pairs' noise (3 seeds) is 0.97 pp, their median 0.67 pp
#: (README, "The seed, reproduced"). Another federation should be confirmed, not rely on it.
NOISE_FALLBACK_PP = 1.0
_EPS = 1e-9


def is_default_t_alpha(params: dict[str, Any]) -> bool:
    """True when a configuration keeps the common defaults T = 1 and α = 0.5."""
    return (
        abs(float(params["temperature"]) - DEFAULT_PARAMS["temperature"]) < _EPS
        and abs(float(params["alpha"]) - DEFAULT_PARAMS["alpha"]) < _EPS
    )


def describe(params: dict[str, Any] | None) -> str:
    """A configuration in one short line, e.g. ``T=0.54 α=0.21 ce public``."""
    return config_line(params)


@dataclass(frozen=True)
class Direction:
    """One direction of a pair (student ← teacher): its default and its best gain."""

    student: int
    teacher: int
    position: str
    default_gain: float | None
    best_gain: float | None
    best_params: dict[str, Any] | None
    confirmed: bool  # the gains are means over the confirm seeds


@dataclass
class PairResult:
    """A pair study's best against the same-student default, with the noise between them."""

    study: str
    study_id: int
    pair: tuple[int, int]
    finished: int
    complete: int
    budget: int | None
    accuracy_before: dict[int, float]  # participant -> test accuracy before KD (%)
    directions: list[Direction]
    # The best configuration (None while the study has no complete trial):
    position: str | None = None
    student: int | None = None
    teacher: int | None = None
    best_trial: int | None = None
    best_params: dict[str, Any] | None = None
    best_gain: float | None = None
    default_gain: float | None = None
    best_accuracy: float | None = None  # test accuracy after the round (%)
    default_accuracy: float | None = None
    best_forgetting: float | None = None
    default_forgetting: float | None = None
    best_std: float | None = None  # over the confirm seeds
    default_std: float | None = None
    repeats: int = 0  # confirm seeds behind the figures (0: single tuning trials)
    stale_confirmation: bool = False  # confirmed, but its strategy now picks other candidates
    noise: float = NOISE_FALLBACK_PP
    noise_source: str = "fallback"  # confirm | pooled | fallback
    #: Where confirmed: the paired test's verdict that the tested candidate beats its default
    #: (tuner.read.answer.recommendation); None for single tuning trials.
    tested: bool | None = None

    @property
    def confirmed(self) -> bool:
        return self.repeats > 0

    @property
    def margin(self) -> float | None:
        """Best gain minus the default's gain for the same student (pp)."""
        if self.best_gain is None or self.default_gain is None:
            return None
        return self.best_gain - self.default_gain

    @property
    def non_default_t_alpha(self) -> bool:
        return self.best_params is not None and not is_default_t_alpha(self.best_params)

    @property
    def beyond_noise(self) -> bool:
        """The best beats the default beyond noise: by the recommendation's paired test where
        confirmed (the one rule, so the report says what export and status say), else by more
        than the trial-to-trial noise on single trials."""
        if self.tested is not None:
            return self.tested
        return self.margin is not None and self.margin > self.noise

    @property
    def needs_tuning(self) -> bool:
        """The poster's criterion: T ≠ 1 or α ≠ 0.5, and better than the default beyond noise."""
        return self.non_default_t_alpha and self.beyond_noise

    @property
    def gain_ratio(self) -> float | None:
        """Best gain / default gain; undefined where the default does not gain (≤ 0)."""
        if self.best_gain is None or self.default_gain is None or self.default_gain <= 0:
            return None
        return self.best_gain / self.default_gain

    @property
    def accuracy_ratio(self) -> float | None:
        """Accuracy after the best round / after the default round."""
        if self.best_accuracy is None or not self.default_accuracy:
            return None
        return self.best_accuracy / self.default_accuracy


@dataclass(frozen=True)
class TrialPoint:
    """One complete tuning trial, for the forgetting-against-gain scatter."""

    study: str
    number: int
    gain: float
    forgetting: float
    transfer_set: str
    divergence: str
    default: bool


@dataclass(frozen=True)
class Ratios:
    """Mean and median of a per-pair ratio, and how many pairs it is defined for."""

    mean: float | None
    median: float | None
    used: int
    excluded: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Ratios:
        values = list(values)
        defined = [v for v in values if v is not None]
        return cls(
            statistics.fmean(defined) if defined else None,
            statistics.median(defined) if defined else None,
            len(defined),
            len(values) - len(defined),
        )


@dataclass
class Summary:
    """The poster's questions, answered over the pairs that have a best and a default."""

    pairs: int  # pair studies in the report
    compared: int  # of them with both a best and a same-student default
    trials_min: int
    trials_max: int
    budget: int | None
    needs_tuning: int  # T ≠ 1 or α ≠ 0.5, beating the default beyond noise
    beyond_noise: int  # any configuration beating the default beyond noise
    non_default_t_alpha: int
    better: int  # best > default at all
    gain_ratio: Ratios
    accuracy_ratio: Ratios
    confirmed: int
    repeats: list[int]
    stale: int
    noise_median: float | None
    noise_sources: dict[str, int]

    @property
    def share_needing_tuning(self) -> float | None:
        return self.needs_tuning / self.compared if self.compared else None


def recommended_figures(rows: Sequence[dict]) -> tuple[int, Ratios]:
    """The poster's two figures on the recommended configurations: the pairs whose
    recommendation is tuned with T ≠ 1 or α ≠ 0.5 (a tuned one is recommended only beyond
    noise), and the recommended / confirmed default gain (where the default gains at all)."""
    needs = sum(
        1
        for r in rows
        if not r["recommended_is_default"] and not is_default_t_alpha(r["recommended_params"])
    )
    ratios = Ratios.of(
        r["recommended_gain_mean"] / r["confirmed_default_gain_mean"]
        if r["confirmed_default_gain_mean"] > 0
        else None
        for r in rows
    )
    return needs, ratios


@dataclass
class ReportData:
    """Everything the report shows for one federation's pair studies."""

    storage: str  # masked URL
    federation: str
    federation_hash: str
    participants: int
    accuracy_before: dict[int, float]
    pairs: list[PairResult]
    trials: list[TrialPoint]
    summary: Summary
    pooled_noise: float | None  # RMS of the confirmed pairs' noise
    importances: dict[str, float] = field(default_factory=dict)
    importance_pairs: int = 0
    compare: list = field(default_factory=list)  # tuner.read.results.Cell of every compare study
    clients: list[dict] = field(default_factory=list)  # tuner.read.results.client_rows
    #: Every pair row (tuner.read.results.pair_rows), read with the same recommendations.
    rows: list[dict] = field(default_factory=list)

    @property
    def recommended(self) -> list[dict]:
        """The pair rows whose run confirmed its candidates (--confirm)."""
        return [r for r in self.rows if r["recommended_gain_mean"] is not None]

    @property
    def compared(self) -> list[PairResult]:
        return [p for p in self.pairs if p.margin is not None]


def collect(
    storage: optuna.storages.RDBStorage,
    url: str,
    federation: str | None = None,
    importances: bool = True,
) -> ReportData:
    """Read one federation's pair studies into a ReportData (raises UsageError if there are
    none, or several federations and no ``federation``)."""
    studies = one_federation(storage, url, federation, kind="pair")
    names = [studies[0].user_attrs["federation"]]
    key = studies[0].user_attrs["federation_hash"]  # its name may be stored under another too
    accuracy: dict[int, float] = {}
    pairs, points = [], []
    recs = recommendations(storage, studies)
    for s in studies:
        trials = storage.get_all_trials(study_id_of(s), deepcopy=False)
        pairs.append(pair_result(s, trials, recs[s.study_name]))
        accuracy.update(pairs[-1].accuracy_before)
        points += [
            TrialPoint(
                s.study_name,
                t.number,
                float(t.value),
                float(t.user_attrs["forgetting"]),
                t.params["transfer_set"],
                t.params["divergence"],
                is_default(t.user_attrs),
            )
            for t in trials
            if t.state == TrialState.COMPLETE and "forgetting" in t.user_attrs
        ]
    pooled = apply_noise(pairs)
    first = studies[0].user_attrs
    participants = int(first.get("config", {}).get("federation", {}).get("participants", 0))
    data = ReportData(
        storage=mask(url),
        federation=names[0],
        federation_hash=first["federation_hash"],
        participants=max(participants, *(max(p.pair) + 1 for p in pairs)),
        accuracy_before=dict(sorted(accuracy.items())),
        pairs=pairs,
        trials=points,
        summary=summarise(pairs),
        pooled_noise=pooled,
    )
    if importances:
        data.importances, data.importance_pairs = pooled_importances(storage, studies)
    # The neighbourhood mode's studies, shown where present.
    data.compare, data.clients = read_cells(storage), client_rows(storage, federation)
    data.rows = pair_rows(storage, key, recs)  # the answers computed once, above
    return data


def pair_result(
    study: optuna.study.FrozenStudy,
    trials: Sequence[FrozenTrial],
    rec: Answer | None = None,
) -> PairResult:
    """One pair's figures: from its answer (tuner.read.answer.Answer: the best
    confirmed candidate against its default, means over the fresh seeds, and the paired test's
    verdict) where its confirmation is complete, else from single tuning trials."""
    attrs = study.user_attrs
    a, b = attrs["pair"]
    done = complete(trials)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    students = {"a": (a, b), "b": (b, a)}
    by_position = defaults(done)
    best = best_trial(done)
    plan = ConfirmationPlan.from_attrs(attrs)
    result = PairResult(
        study=study.study_name,
        study_id=study_id_of(study),
        pair=(a, b),
        finished=finished,
        complete=len(done),
        budget=budget_of(attrs),
        accuracy_before={a: float(attrs["accuracy_a"]), b: float(attrs["accuracy_b"])},
        directions=[],
        # Confirmed, but its strategy would now pick other candidates (a later run went on).
        stale_confirmation=plan is not None
        and tuple(t.number for t in strategy_of(attrs).candidates(trials)) != plan.candidates,
    )
    for position, (student, teacher) in students.items():
        if rec is not None and rec.best.params["position"] == position:  # the tested direction
            result.directions.append(Direction(student, teacher, position, rec.default.gain_mean,
                                               rec.best.gain_mean, rec.best.params, True))
            continue
        top = best_trial([t for t in done if t.params.get("position") == position])
        result.directions.append(
            Direction(student, teacher, position, _value(by_position.get(position)), _value(top),
                      None if top is None else dict(top.params), False)
        )  # fmt: skip
    if rec is not None:
        d = rec.default
        result.position = rec.best.params["position"]
        result.student, result.teacher = rec.best.student, rec.best.teacher
        result.best_trial, result.best_params = rec.best.trial, dict(rec.best.params)
        result.best_gain, result.default_gain = rec.best.gain_mean, d.gain_mean
        result.best_accuracy, result.default_accuracy = rec.best.accuracy_mean, d.accuracy_mean
        result.best_forgetting = rec.best.forgetting_mean
        result.default_forgetting = d.forgetting_mean
        result.best_std, result.default_std = rec.best.gain_std, d.gain_std
        result.repeats = len(rec.seeds)
        result.tested = rec.beyond_noise
        return result
    if best is None:
        return result
    position = best.params["position"]
    result.position = position
    result.student, result.teacher = students[position]
    result.best_trial, result.best_params = best.number, dict(best.params)
    default = by_position.get(position)
    result.best_gain = float(best.value)
    result.best_accuracy = best.user_attrs.get("accuracy_after")
    result.best_forgetting = best.user_attrs.get("forgetting")
    if default is not None:
        result.default_gain = float(default.value)
        result.default_accuracy = default.user_attrs.get("accuracy_after")
        result.default_forgetting = default.user_attrs.get("forgetting")
    return result


def _value(trial: FrozenTrial | None) -> float | None:
    return None if trial is None else float(trial.value)


def own_noise(pair: PairResult) -> float | None:
    """A confirmed pair's noise: the pooled std of its best's and default's gains over seeds."""
    if not pair.confirmed or pair.best_std is None or pair.default_std is None:
        return None
    return math.sqrt((pair.best_std**2 + pair.default_std**2) / 2)


def apply_noise(pairs: Sequence[PairResult]) -> float | None:
    """Set each pair's noise (module docstring); return the pooled noise (None if none)."""
    own = {id(p): v for p in pairs if (v := own_noise(p)) is not None}
    pooled = math.sqrt(statistics.fmean(v * v for v in own.values())) if own else None
    for p in pairs:
        if id(p) in own:
            p.noise, p.noise_source = own[id(p)], "confirm"
        elif pooled is not None:
            p.noise, p.noise_source = pooled, "pooled"
        else:
            p.noise, p.noise_source = NOISE_FALLBACK_PP, "fallback"
    return pooled


def summarise(pairs: Sequence[PairResult]) -> Summary:
    """The pooled figures over the pairs with both a best and a same-student default."""
    compared = [p for p in pairs if p.margin is not None]
    finished = [p.finished for p in pairs] or [0]
    budgets = {p.budget for p in pairs if p.budget is not None}
    noises = [p.noise for p in compared]
    return Summary(
        pairs=len(pairs),
        compared=len(compared),
        trials_min=min(finished),
        trials_max=max(finished),
        budget=budgets.pop() if len(budgets) == 1 else None,
        needs_tuning=sum(p.needs_tuning for p in compared),
        beyond_noise=sum(p.beyond_noise for p in compared),
        non_default_t_alpha=sum(p.non_default_t_alpha for p in compared),
        better=sum(p.margin > 0 for p in compared),  # type: ignore[operator]
        gain_ratio=Ratios.of(p.gain_ratio for p in compared),
        accuracy_ratio=Ratios.of(p.accuracy_ratio for p in compared),
        confirmed=sum(p.confirmed for p in pairs),
        repeats=sorted({p.repeats for p in pairs if p.confirmed}),
        stale=sum(p.stale_confirmation for p in pairs),
        noise_median=statistics.median(noises) if noises else None,
        noise_sources=dict(Counter(p.noise_source for p in compared)),
    )


def best_distribution(pairs: Sequence[PairResult], key: str) -> dict[str, int]:
    """How many pairs' best configuration has each value of a categorical parameter."""
    counts = Counter(
        "n/a" if p.best_params is None else str(p.best_params.get(key, "n/a")) for p in pairs
    )
    return dict(sorted(counts.items()))


def student_role(pair: PairResult) -> str | None:
    """Whether the best makes the less or the more accurate member the student."""
    if pair.student is None or pair.teacher is None:
        return None
    return role(pair.accuracy_before[pair.student], pair.accuracy_before[pair.teacher])


def pooled_importances(
    storage: optuna.storages.RDBStorage, studies: Sequence[optuna.study.FrozenStudy]
) -> tuple[dict[str, float], int]:
    """Optuna's parameter importances (normalised per pair), averaged over the pairs where they
    can be computed; a parameter a pair never sampled counts 0 there. Returns (means, pairs)."""
    per_pair: list[dict[str, float]] = []
    for s in studies:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        try:
            with warnings.catch_warnings():
                # PED-ANOVA warns per parameter with few trials per value; the caption says the
                # importances are per pair and averaged, which is what tempers that.
                warnings.simplefilter("ignore", UserWarning)
                values = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # too few complete trials, or only one configuration
            continue
        if values and all(math.isfinite(v) for v in values.values()):
            per_pair.append(values)
    if not per_pair:
        return {}, 0
    names = sorted({k for d in per_pair for k in d})
    means = {k: statistics.fmean(d.get(k, 0.0) for d in per_pair) for k in names}
    return dict(sorted(means.items(), key=lambda kv: -kv[1])), len(per_pair)
