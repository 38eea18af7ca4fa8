"""Confirmation: each pair's candidates re-run with fresh seeds, in the run (``--confirm K``) and
by ``dkd-tune confirm`` alike (docs/design.md §4).

The best of a study is the maximum of many single noisy trials, so its gain is biased upwards;
re-running its strategy's candidates (tuner.strategies: the race's incumbent, the fixed
strategy's best few) and their same-student defaults with k seeds no trial used gives means to
compare them by. Candidates and defaults share the seeds, so the
seed's share of the noise cancels in the paired test. The runs are the trials of the pair's
confirmation study (tuner.kinds.confirmation), served by the worker pool with the guarantees of
every kind. What a pair's confirmation is, is written once: the plan (candidates and seeds) in the
pair study's user attr ``confirmation`` (tuner.store.records.ConfirmationPlan); with the
confirmation study's trials it is the one record the answer, status, export, notes and report
read (tuner.read.answer).
Rerunning with the same seeds reproduces it, and runs only the missing seeds.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from objectives import load_config
from tuner.errors import StorageError, UsageError
from tuner.formats import pm
from tuner.kinds import KINDS, Task, own_configs
from tuner.kinds.confirmation import runs
from tuner.kinds.setup import READY_TIMEOUT_S
from tuner.options import TuneOptions, check_options, parse_devices, parse_pairs
from tuner.read.answer import Answer, Confirmed
from tuner.read.results import confirmation_states, one_federation, pair_studies, recommendations
from tuner.run.start import RunSummary, run_tasks, start
from tuner.search.best import complete
from tuner.store.adapter import study_id_of
from tuner.store.db import open_storage, quiet_optuna
from tuner.store.records import ConfirmationPlan, RunRecord, is_default
from tuner.store.storage import check_storage, mask
from tuner.strategies import Strategy, strategy_of
from tuner.views.notes import write_notes
from tuner.worker.pool import WAIT_S

Say = Callable[[str], None]
#: First confirm seed; far above the tuning trials' seeds (seed * 1_000_003 + trial number).
CONFIRM_SEED_BASE = 2_000_000_011


@dataclass
class ConfirmOutcome:
    """What a confirmation did for one pair study."""

    study: str
    state: str  # confirmed | skipped | failed
    reason: str = ""
    record: Answer | None = None  # the pair's answer (tuner.read.answer)


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
    trials: Sequence[FrozenTrial], repeats: int, strategy: Strategy
) -> ConfirmationPlan | None:
    """A pair's confirmation plan (its strategy's candidates, fresh seeds and looks), None while
    no default finished: deterministic from its trials, so the run and a joining worker compute
    the same one."""
    chosen = strategy.candidates(trials)
    if not any(is_default(t.user_attrs) for t in chosen):
        return None
    return ConfirmationPlan(tuple(t.number for t in chosen), tuple(fresh_seeds(trials, repeats)),
                            tuple(strategy.looks(repeats)))  # fmt: skip


def _task(
    study: optuna.study.FrozenStudy,
    plan: ConfirmationPlan,
    seeds: Sequence[int],
    trials: Sequence[FrozenTrial],
) -> Task:
    """The confirmation study's task for a plan's ``seeds`` (those its looks need so far): each
    candidate's configuration once per seed."""
    config = KINDS["pair"].task_from(study.study_name, study.user_attrs, None).config
    pair = tuple(study.user_attrs["pair"])
    by_number = {t.number: t for t in trials}
    wanted = tuple(q for n in plan.candidates for q in runs(n, by_number[n].params, seeds))
    kind = KINDS["confirm"]
    return Task(kind.study_name(config.name, pair), kind.name, pair, config, wanted=wanted)


def confirm_pairs(
    opts: TuneOptions,
    studies: Sequence[optuna.study.FrozenStudy],
    repeats: int,
    devices: list[str],
    say: Say,
    *,
    force: bool = False,
) -> list[ConfirmOutcome]:
    """Confirm each pair study's candidates with up to ``repeats`` fresh seeds on the pool: the
    plan is recorded, the missing runs are run look by look (a race's first look, then the rest
    where it does not decide), the notes rewritten; one outcome per study (skipped: nothing to
    compare yet, or already confirmed for its current candidates)."""
    storage = open_storage(opts.storage)
    outcomes: dict[str, ConfirmOutcome] = {}
    todo: list[str] = []
    plans: dict[str, ConfirmationPlan] = {}
    before = recommendations(storage, studies)
    for s in studies:
        trials = storage.get_all_trials(study_id_of(s), deepcopy=False)
        plan = _plan(trials, repeats, strategy_of(s.user_attrs))
        if plan is None:
            why = "no default trial finished yet" if complete(trials) else "no complete trial"
            outcomes[s.study_name] = ConfirmOutcome(s.study_name, "skipped", why)
            continue
        stored = ConfirmationPlan.from_attrs(s.user_attrs)
        if not force and stored == plan and before[s.study_name]:
            outcomes[s.study_name] = ConfirmOutcome(
                s.study_name, "skipped", f"already confirmed ({repeats} seeds)",
                before[s.study_name],
            )  # fmt: skip
            continue
        if stored != plan:
            for key, value in plan.to_attrs().items():
                storage.set_study_user_attr(study_id_of(s), key, value)
        todo.append(s.study_name)
        plans[s.study_name] = plan
    for o in outcomes.values():
        say(f"{o.study}: {o.state} ({o.reason})")
    if not todo:
        return [outcomes[s.study_name] for s in studies]
    ran: dict[str, tuple[int, ...]] = {}
    # Look by look (a sequential plan has two, a fixed one decides at the first) until no pair
    # needs more runs: the last pass's states are the answers (each computed once per pass).
    for look in itertools.count():
        fresh = {s.study_name: s for s in pair_studies(storage)}  # with the plans just written
        states = confirmation_states(storage, [fresh[n] for n in todo])
        tasks = []
        for name in todo:
            seeds, answer = states[name].seeds, states[name].answer
            if answer is None and seeds != ran.get(name):  # runs to do (not the ones that failed)
                ran[name] = seeds
                trials = storage.get_all_trials(study_id_of(fresh[name]), deepcopy=False)
                tasks.append(_task(fresh[name], plans[name], seeds, trials))
        if not tasks:
            break
        mine = [fresh[n] for n in todo]
        start(opts, tasks, devices, say, _confirming(tasks, look, mine, repeats))
    for name in todo:
        rec = states[name].answer
        if rec is None:
            outcomes[name] = ConfirmOutcome(name, "failed", "some seed runs failed: rerun confirm")
            say(f"{name}: failed (some seed runs failed: rerun confirm)")
            continue
        outcomes[name] = ConfirmOutcome(name, "confirmed", record=rec)
        say(f"{name}: {_verdict(rec)}")
    # Unconfirmed pairs' noise is pooled over the confirmed ones: every note may change.
    write_notes(storage, opts.storage, [s.study_name for s in pair_studies(storage)])
    return [outcomes[s.study_name] for s in studies]


def _confirming(
    tasks: Sequence[Task], look: int, studies: Sequence[optuna.study.FrozenStudy], repeats: int
) -> str:
    """The line a confirmation pass starts with: what it runs, on how many fresh seeds."""
    if look:
        return (f"{len(tasks)} pair(s) not decided at the first look: their candidates on all "
                f"{repeats} fresh seeds")  # fmt: skip
    counts = sorted({len({q[0]["seed"] for q in t.wanted}) for t in tasks})
    seeds = " or ".join(str(n) for n in counts)
    sequential = any((p := ConfirmationPlan.from_attrs(s.user_attrs)) and p.sequential
                     for s in studies)  # fmt: skip
    more = f" (up to {repeats} where that does not decide)" if sequential else ""
    return f"confirming {len(tasks)} pair(s): {_what(studies)} with {seeds} fresh seeds{more}"


def _what(studies: Sequence[optuna.study.FrozenStudy]) -> str:
    """What a confirmation runs, by the studies' strategies."""
    return "; ".join(dict.fromkeys(strategy_of(s.user_attrs).confirms for s in studies))


def _verdict(answer: Answer) -> str:
    """One line on a pair's confirmed answer."""
    best, default = answer.best, answer.default
    head = f"{default.student}<-{default.teacher}"
    tail = f"over {len(answer.seeds)} seeds"
    if not answer.tuned:
        return f"{head} the default {_pm(default)} pp, no tuned candidate above it, {tail}"
    if answer.recommends_default:
        return (f"{head} the default {_pm(default)} pp (best tuned {_pm(best)}: not "
                f"{answer.criterion}) {tail}")  # fmt: skip
    return (f"{head} trial #{best.trial} {_pm(best)} pp against the default {_pm(default)}, "
            f"p = {answer.p_value:.3f}, {tail}")  # fmt: skip


def join_confirmation(
    opts: TuneOptions, names: Sequence[str], say: Say, timeout: float = READY_TIMEOUT_S
) -> RunSummary | None:
    """For a joining ``dkd-tune worker`` whose pair studies are done: serve their confirmation
    too, as the process that started the run does (it plans and enqueues the runs, look by look;
    a worker never does, so every run is enqueued once). The plan and the seeds a look needs are
    deterministic from the studies' trials, so the worker computes them and waits up to
    ``timeout`` seconds for the run to have stored and enqueued them. None when the run
    confirms nothing."""
    storage = open_storage(opts.storage)
    runs_of = {s.study_name: RunRecord.from_attrs(s.user_attrs) for s in pair_studies(storage)}
    repeats = {name: run.confirm for name in names
               if (run := runs_of.get(name)) is not None and run.confirm}  # fmt: skip
    if not repeats:
        return None
    waiting = set(repeats)
    ran: dict[str, tuple[int, ...]] = {}
    served: RunSummary | None = None
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        fresh = {s.study_name: s for s in pair_studies(storage) if s.study_name in waiting}
        states = confirmation_states(storage, list(fresh.values()))
        tasks: list[Task] = []
        for name, s in fresh.items():
            trials = storage.get_all_trials(study_id_of(s), deepcopy=False)
            plan = _plan(trials, repeats[name], strategy_of(s.user_attrs))
            seeds, answer = states[name].seeds, states[name].answer
            if plan is None or answer is not None or (seeds and seeds == ran.get(name)):
                waiting.discard(name)  # nothing to compare, decided, or its runs failed
                continue
            if ConfirmationPlan.from_attrs(s.user_attrs) != plan:
                continue
            task = _task(s, plan, seeds, trials)
            if _queued(storage, task):
                ran[name] = seeds
                tasks.append(task)
        if not tasks:
            time.sleep(WAIT_S)
            continue
        ids = {t.study: storage.get_study_id_from_name(t.study) for t in tasks}
        say(f"joining the confirmation of {len(tasks)} pair(s)")
        summary = run_tasks(opts, tasks, parse_devices(opts.devices), storage, ids, say)
        served = summary if served is None else _added(served, summary)
        deadline = time.monotonic() + timeout  # a next look is enqueued once this one is done
    if waiting:
        say(
            f"{len(waiting)} pair(s) not set up for confirmation by the run within {timeout:.0f}s "
            f"(e.g. {sorted(waiting)[0]}): run dkd-tune confirm --storage ... once the run ends"
        )
    return served


def _added(a: RunSummary, b: RunSummary) -> RunSummary:
    """Two passes of a worker as one summary."""
    return RunSummary({**a.studies, **b.studies}, a.reports + b.reports, a.seconds + b.seconds,
                      a.finished + b.finished, a.opts)  # fmt: skip


def _queued(storage: optuna.storages.RDBStorage, task: Task) -> bool:
    """True once the confirmation study holds every run of the task (in any state)."""
    try:
        study_id = storage.get_study_id_from_name(task.study)
    except KeyError:
        return False
    if not storage.get_study_user_attrs(study_id).get("ready"):
        return False
    return not KINDS["confirm"].queue(task, storage.get_all_trials(study_id, deepcopy=False))


def confirm_in_run(opts: TuneOptions, names: Sequence[str], devices: list[str], say: Say) -> None:
    """After a run's pair studies have their trials: confirm them with ``opts.confirm`` seeds."""
    storage = open_storage(opts.storage)
    studies = [s for s in pair_studies(storage) if s.study_name in set(names)]
    confirm_pairs(opts, studies, opts.confirm, devices, say)


def confirm(
    url: str,
    *,
    repeats: int = 3,
    federation: str | None = None,
    pairs: str = "all",
    devices: str = "auto",
    bundles: str | None = None,
    force: bool = False,
    config: str | None = None,
    say: Say = print,
    **pool: Any,
) -> list[ConfirmOutcome]:
    """Confirm every selected pair study in ``url`` on the worker pool; a pair's summary is
    stored (and its dashboard note rewritten) once its runs are complete, so an interrupted
    confirm keeps what it finished and a rerun runs only the missing seeds. ``pool``: worker
    options of TuneOptions (``workers``, ``workers_per_device``, ``progress``, heartbeat).
    ``config``: the user's own config file, where participants whose models are code come from
    (never from the storage); it must give every study's federation hash."""
    if not isinstance(repeats, int) or repeats < 2:
        raise UsageError(f"--repeats {repeats} gives no spread: use 2 or more, e.g. --repeats 3")
    opts = TuneOptions(**{"progress": "quiet", **pool}, storage=url, devices=devices,
                       bundles=bundles)  # fmt: skip
    check_options(opts)
    device_list = parse_devices(devices)
    check_storage(url)
    storage = open_storage(url)
    studies = [
        s for s in one_federation(storage, url, federation, kind="pair", writes=True)
        if "config" in s.user_attrs
    ]
    if not studies:
        raise StorageError(f"no dkd-tune pair studies with a stored config in {mask(url)}")
    with own_configs(load_config(config) if config else None):
        # Every study, not only the first: each is rebuilt from its attrs (or --config) later.
        for s in studies:
            stored = KINDS["pair"].task_from(s.study_name, s.user_attrs, None).config
            if stored.federation_hash != s.user_attrs["federation_hash"]:
                raise StorageError(
                    f"study {s.study_name} holds a config whose hash {stored.federation_hash} "
                    f"is not its federation hash {s.user_attrs['federation_hash']}: it was "
                    "written by another dkd-tune version; rerun the tuning in a new storage"
                )
        wanted = set(parse_pairs(pairs, stored.federation.participants))
        chosen = [s for s in studies if tuple(s.user_attrs["pair"]) in wanted]
        if not chosen:
            raise UsageError(f"--pairs {pairs}: none of these pairs has a study in {mask(url)}")
        # Everything that can be refused without running was checked.
        quiet_optuna()
        return confirm_pairs(opts, chosen, repeats, device_list, say, force=force)


def _pm(entry: Confirmed) -> str:
    return pm(entry.gain_mean, entry.gain_std)


__all__ = [
    "CONFIRM_SEED_BASE",
    "ConfirmOutcome",
    "confirm",
    "confirm_in_run",
    "confirm_pairs",
    "fresh_seeds",
    "join_confirmation",
]
