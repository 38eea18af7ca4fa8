"""The one adapter for Optuna's private parts (docs/design.md §4, "What of Optuna dkd-tune relies
on"). Every private attribute, system attr and override the tuner uses is named here, so an
Optuna release that changes one breaks one module, and :func:`check` — run by
tests/tuner/test_optuna_adapter.py — says which part changed.

Why each is needed:

* ``Study._storage`` / ``Study._study_id`` / ``FrozenStudy._study_id``: the raw queries of
  ``tuner.store.db`` and per-study attrs take the storage and the study's id; the public API
  would load every trial of every study to get there.
* ``Trial._trial_id``: a claimed trial's id for the heartbeat, the budget rule and ``tell``.
* ``optuna.study._frozen.FrozenStudy``: the type ``get_all_studies`` returns (not exported).
* the system attr ``fixed_params``: an enqueued trial's whole configuration before it is
  suggested (retries, a race's rounds, the warm start's duplicates check).
* ``Study._get_trials``: every Optuna sampler lists a study's trials through it, so a view of a
  study that overrides it shows a sampler only some trials (the race's one point per
  configuration, tuner.search.sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Any

import optuna
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

#: The system attr in which Optuna keeps an enqueued trial's parameters.
FIXED_PARAMS = "fixed_params"

Keep = Callable[[Sequence[FrozenTrial]], list[FrozenTrial]]


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study was loaded from."""
    return study._storage


def study_id_of(study: optuna.Study | FrozenStudy) -> int:
    """A study's id in its storage (a loaded study or one of ``get_all_studies``)."""
    return study._study_id


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage."""
    return trial._trial_id


def fixed_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The parameters a trial was enqueued with (None: it was not enqueued)."""
    return trial.system_attrs.get(FIXED_PARAMS)


class StudyView(optuna.Study):
    """A study as a sampler should see it: the study's state, but only the trials ``keep``
    returns from its trials."""

    def __init__(self, study: optuna.Study, keep: Keep) -> None:
        # A shallow copy of the study's state: Study.__init__ would load the study again.
        self.__dict__ = {**study.__dict__, "_dkd_keep": keep}

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = optuna.Study._get_trials(self, deepcopy=False, use_cache=use_cache)
        return [t for t in self._dkd_keep(trials) if states is None or t.state in states]


def check() -> list[str]:
    """What of the parts above this Optuna no longer provides, one line per part ([] when all
    hold), each naming the part: run on an in-memory study."""
    problems = []
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="probe")
    study.enqueue_trial({"x": 0.5})
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    checks = [
        ("Study._storage", lambda: storage_of(study) is storage),
        ("Study._study_id", lambda: study_id_of(study) == storage.get_study_id_from_name("probe")),
        ("FrozenStudy._study_id / optuna.study._frozen.FrozenStudy",
         lambda: all(isinstance(s, FrozenStudy) and study_id_of(s) == study_id_of(study)
                     for s in storage.get_all_studies())),
        ("Trial._trial_id", lambda: storage.get_trial(trial_id_of(trial)).number == trial.number),
        (f"the system attr {FIXED_PARAMS!r} of an enqueued trial",
         lambda: fixed_params(storage.get_trial(trial_id_of(trial))) == {"x": 0.5}),
    ]  # fmt: skip
    study.tell(trial, 1.0)
    for x in (0.1, 0.9):
        study.enqueue_trial({"x": x})
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), x)
    view = StudyView(study, lambda trials: list(trials[:1]))
    checks += [
        ("Study._get_trials (Study.get_trials goes through it)",
         lambda: len(view.get_trials()) == 1 and len(study.get_trials()) == 3),
        ("Study._get_trials (samplers list trials through it: a StudyView hides trials)",
         lambda: _tpe_pick(view) == _tpe_pick(_only_first(study)) != _tpe_pick(study)),
    ]  # fmt: skip
    for part, holds in checks:
        try:
            ok = holds()
        except Exception as exc:  # an attribute gone is a changed part too
            ok, part = False, f"{part} ({type(exc).__name__}: {exc})"
        if not ok:
            problems.append(f"Optuna {optuna.__version__} changed {part}")
    return problems


def _tpe_pick(study: optuna.Study) -> float:
    """TPE's next x for ``study`` with 2 start-up trials: a seeded random draw while it sees
    fewer than 2 complete trials, its model's pick otherwise (so the pick tells what it saw)."""
    sampler = optuna.samplers.TPESampler(n_startup_trials=2, seed=0)
    return sampler.sample_independent(
        study, study.trials[0], "x", optuna.distributions.FloatDistribution(0, 1)
    )


def _only_first(study: optuna.Study) -> optuna.Study:
    """A new in-memory study holding only ``study``'s first trial."""
    alone = optuna.create_study()
    alone.add_trial(study.trials[0])
    return alone
