"""``dkd-tune confirm``: re-run each pair's best and default configurations with fresh seeds.

The best of a study is the maximum of many single noisy trials, so its gain is biased upwards;
re-running it and the same-student default with k seeds no trial used gives means and standard
deviations to compare them by (and the noise estimate of ``report_data``). Best and default share
the seeds, so seed-to-seed variation affects both alike. The runs are the trials of the pair's
confirmation study (tuner.kinds.confirmation), served by the worker pool (``--workers N``,
``dkd-tune worker``) with the guarantees of every kind; once a pair's runs are complete, the
summary is stored in the pair study's user attr ``confirm``, which the report, the notes and
``export`` read. Rerunning with the same seeds reproduces it, and a pair already confirmed for its
current best with at least k seeds is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .db import open_storage, quiet_optuna
from .errors import StorageError, UsageError
from .kinds import KINDS, Task
from .kinds.confirmation import runs
from .notes import write_notes
from .options import TuneOptions, check_options, parse_devices, parse_pairs
from .results import (
    CONFIRM_ATTR,
    PLAN_ATTR,
    best_trial,
    confirmation_runs,
    one_federation,
    pair_studies,
)
from .run import start
from .storage import check_storage, mask

Say = Callable[[str], None]
#: First confirm seed; far above the tuning trials' seeds (seed * 1_000_003 + trial number).
CONFIRM_SEED_BASE = 2_000_000_011
#: Candidates a run confirms per pair (besides the defaults they are compared with).
TOP_CANDIDATES = 3


@dataclass
class ConfirmOutcome:
    """What confirm did for one pair study."""

    study: str
    state: str  # confirmed | skipped | failed
    reason: str = ""
    record: dict[str, Any] | None = None


@dataclass
class _Plan:
    """One pair to confirm: its study, candidates (best, default) and seeds."""

    study: optuna.study.FrozenStudy
    best: FrozenTrial
    default: FrozenTrial
    seeds: list[int]
    task: Task


def fresh_seeds(trials: Sequence[FrozenTrial], k: int) -> list[int]:
    """The first k seeds from CONFIRM_SEED_BASE that no trial of the study ran with."""
    used = {t.user_attrs.get("seed") for t in trials}
    seeds, s = [], CONFIRM_SEED_BASE
    while len(seeds) < k:
        if s not in used:
            seeds.append(s)
        s += 1
    return seeds


def _plan(
    study: optuna.study.FrozenStudy, trials: Sequence[FrozenTrial], repeats: int, force: bool
) -> _Plan | ConfirmOutcome:
    """What to run for one pair, or why nothing is run."""
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = best_trial(done)
    if best is None:
        return ConfirmOutcome(study.study_name, "skipped", "no complete trial yet")
    position = best.params["position"]
    default = next((t for t in done if t.user_attrs.get("default") == position), None)
    if default is None:
        return ConfirmOutcome(
            study.study_name, "skipped", f"no default trial for position {position}"
        )
    old = study.user_attrs.get(CONFIRM_ATTR)
    if (
        not force
        and old
        and old["best"]["trial"] == best.number
        and old["default"]["trial"] == default.number
        and old["repeats"] >= repeats
    ):
        return ConfirmOutcome(
            study.study_name, "skipped", f"already confirmed ({old['repeats']} seeds)"
        )
    seeds = fresh_seeds(trials, repeats)
    config = KINDS["pair"].task_from(study.study_name, study.user_attrs, None).config
    kind = KINDS["confirm"]
    pair = tuple(study.user_attrs["pair"])
    # The best may be the default trial itself: same configuration, same seeds, same runs.
    wanted = runs(best.number, best.params, seeds)
    if best.number != default.number:
        wanted += runs(default.number, default.params, seeds)
    task = Task(kind.study_name(config.name, pair), kind.name, pair, config, wanted=tuple(wanted))
    return _Plan(study, best, default, seeds, task)


def _record(plan: _Plan, trials: Sequence[FrozenTrial]) -> dict[str, Any] | None:
    """The confirmation summary of one pair from its confirmation study (None if incomplete)."""
    best = confirmation_runs(trials, plan.best.number, plan.seeds)
    default = confirmation_runs(trials, plan.default.number, plan.seeds)
    if best is None or default is None:
        return None
    a, b = plan.study.user_attrs["pair"]
    position = plan.best.params["position"]
    student, teacher = (a, b) if position == "a" else (b, a)
    device = best.pop("device")
    seconds = best.pop("seconds") + (default.pop("seconds") if plan.best != plan.default else 0)
    default.pop("device", None)
    default.pop("seconds", None)
    return {
        "repeats": len(plan.seeds),
        "seeds": plan.seeds,
        "position": position,
        "student": student,
        "teacher": teacher,
        "device": device,
        "seconds": round(seconds, 2),
        "best": {"trial": plan.best.number, "params": dict(plan.best.params), **best},
        "default": {"trial": plan.default.number, "params": dict(plan.default.params), **default},
    }


def candidates(trials: Sequence[FrozenTrial], top: int = TOP_CANDIDATES) -> list[FrozenTrial]:
    """The ``top`` best COMPLETE trials with distinct configurations (the first trial of a
    configuration run twice), then the same-position default of each: what a run confirms."""
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-t.value, t.number),
    )
    chosen: dict[tuple, FrozenTrial] = {}
    for t in done:
        key = tuple(sorted(t.params.items()))
        if key not in chosen and len(chosen) < top:
            chosen[key] = t
    defaults = {t.user_attrs["default"]: t for t in done if "default" in t.user_attrs}
    out = list(chosen.values())
    for position in dict.fromkeys(t.params["position"] for t in out):
        d = defaults.get(position)
        if d is not None and d not in out:
            out.append(d)
    return out


def confirm_in_run(opts: TuneOptions, names: Sequence[str], devices: list[str], say: Say) -> None:
    """After a run's pair studies have their trials: confirm each one's candidates with
    ``opts.confirm`` fresh seeds on the pool (a confirmation study per pair, counted apart from
    ``--trials``) and record the plan the recommendation is read from (tuner.results)."""
    storage = open_storage(opts.storage)
    tasks = []
    for s in (s for s in pair_studies(storage) if s.study_name in set(names)):
        trials = storage.get_all_trials(s._study_id, deepcopy=False)
        chosen = candidates(trials)
        if not any("default" in t.user_attrs for t in chosen):
            continue  # no default finished yet: nothing to compare with
        seeds = fresh_seeds(trials, opts.confirm)
        plan = {"candidates": [t.number for t in chosen], "seeds": seeds}
        if s.user_attrs.get(PLAN_ATTR) != plan:
            storage.set_study_user_attr(s._study_id, PLAN_ATTR, plan)
        config = KINDS["pair"].task_from(s.study_name, s.user_attrs, None).config
        pair = tuple(s.user_attrs["pair"])
        wanted = tuple(q for t in chosen for q in runs(t.number, t.params, seeds))
        kind = KINDS["confirm"]
        tasks.append(Task(kind.study_name(config.name, pair), kind.name, pair, config,
                          wanted=wanted))  # fmt: skip
    if not tasks:
        return
    start(
        opts, tasks, devices, say,
        f"confirming {len(tasks)} pair(s): {TOP_CANDIDATES} best configurations and the default "
        f"with {opts.confirm} fresh seeds each",
    )  # fmt: skip
    # The best and its default confirmed: the summary the report and the notes read, as after
    # dkd-tune confirm (which then skips these pairs).
    confirmed = []
    for s in (s for s in pair_studies(storage) if s.study_name in set(names)):
        trials = storage.get_all_trials(s._study_id, deepcopy=False)
        planned = _plan(s, trials, opts.confirm, force=True)
        if isinstance(planned, ConfirmOutcome):
            continue
        cid = storage.get_study_id_from_name(planned.task.study)
        record = _record(planned, storage.get_all_trials(cid, deepcopy=False))
        if record is not None and s.user_attrs.get(CONFIRM_ATTR) != record:
            storage.set_study_user_attr(s._study_id, CONFIRM_ATTR, record)
            confirmed.append(s.study_name)
    if confirmed:
        write_notes(storage, opts.storage, [s.study_name for s in pair_studies(storage)])


def confirm(
    url: str,
    *,
    repeats: int = 3,
    federation: str | None = None,
    pairs: str = "all",
    devices: str = "auto",
    bundles: str | None = None,
    force: bool = False,
    say: Say = print,
    **pool: Any,
) -> list[ConfirmOutcome]:
    """Confirm every selected pair study in ``url`` on the worker pool; a pair's summary is
    stored (and its dashboard note rewritten) once its runs are complete, so an interrupted
    confirm keeps what it finished and a rerun runs only the missing seeds. ``pool``: worker
    options of TuneOptions (``workers``, ``workers_per_device``, ``progress``, heartbeat)."""
    if not isinstance(repeats, int) or repeats < 2:
        raise UsageError(f"--repeats {repeats} gives no spread: use 2 or more, e.g. --repeats 3")
    opts = TuneOptions(**{"progress": "quiet", **pool}, storage=url, devices=devices,
                       bundles=bundles)  # fmt: skip
    check_options(opts)
    device_list = parse_devices(devices)
    check_storage(url)
    storage = open_storage(url)
    studies = [
        s for s in one_federation(storage, url, federation, kind="pair") if "config" in s.user_attrs
    ]
    if not studies:
        raise StorageError(f"no dkd-tune pair studies with a stored config in {mask(url)}")
    config = KINDS["pair"].task_from(studies[0].study_name, studies[0].user_attrs, None).config
    if config.federation_hash != studies[0].user_attrs["federation_hash"]:
        raise StorageError(
            f"study {studies[0].study_name} holds a config whose hash {config.federation_hash} "
            f"is not its federation hash {studies[0].user_attrs['federation_hash']}: it was "
            "written by another dkd-tune version; rerun the tuning in a new storage"
        )
    wanted = set(parse_pairs(pairs, config.federation.participants))
    chosen = [s for s in studies if tuple(s.user_attrs["pair"]) in wanted]
    if not chosen:
        raise UsageError(f"--pairs {pairs}: none of these pairs has a study in {mask(url)}")
    # Everything that can be refused without running was checked; now pairs are planned.
    quiet_optuna()
    outcomes: dict[str, ConfirmOutcome] = {}
    plans: list[_Plan] = []
    for s in chosen:
        planned = _plan(s, storage.get_all_trials(s._study_id, deepcopy=False), repeats, force)
        if isinstance(planned, ConfirmOutcome):
            outcomes[s.study_name] = planned
            say(f"{s.study_name}: {planned.state} ({planned.reason})")
        else:
            plans.append(planned)
    if plans:
        start(
            opts, [p.task for p in plans], device_list, say,
            f"confirming {len(plans)} pair(s) of {config.name} with {repeats} seeds on "
            f"{', '.join(device_list)}",
        )  # fmt: skip
    for p in plans:
        study_id = storage.get_study_id_from_name(p.task.study)
        record = _record(p, storage.get_all_trials(study_id, deepcopy=False))
        name = p.study.study_name
        if record is None:
            outcomes[name] = ConfirmOutcome(name, "failed", "some seed runs failed: rerun confirm")
            say(f"{name}: failed ({outcomes[name].reason})")
            continue
        outcomes[name] = ConfirmOutcome(name, "confirmed", record=record)
        if p.study.user_attrs.get(CONFIRM_ATTR) != record:
            storage.set_study_user_attr(p.study._study_id, CONFIRM_ATTR, record)
        say(
            f"{name}: {record['student']}<-{record['teacher']} best {_pm(record['best'])}, "
            f"default {_pm(record['default'])} pp over {repeats} seeds ({record['seconds']:.1f}s)"
        )
    if plans:
        # Unconfirmed pairs' noise is pooled over the confirmed ones: every note may have changed.
        write_notes(storage, url, [s.study_name for s in studies])
    return [outcomes[s.study_name] for s in chosen]


def _pm(runs_: dict[str, Any]) -> str:
    std = runs_["gain_std"]
    return f"{runs_['gain_mean']:+.2f}" + (f" ± {std:.2f}" if std is not None else "")


__all__ = ["CONFIRM_SEED_BASE", "ConfirmOutcome", "confirm", "fresh_seeds"]
