"""A run from start to end, as library calls the CLI (and tests) make: tasks (studies of any
kind) set up and served by the worker pool.

Order matters: everything that can be refused is checked before anything is written — options,
config, search space, targets, devices, the storage URL, and the existing studies' attrs — so bad
input leaves the database exactly as it was. Only then is the bundle prepared, the studies set up
(their trials enqueued once), and the pool started. ``tuner.run.tuning.tune`` (pair or client
studies), ``compare`` and ``confirm`` build their tasks and call :func:`start`; ``join`` rebuilds
the tasks of a stored run for ``dkd-tune worker``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna

from objectives import FederationBundle, StudyConfig, bundle_path, check_federation, load_config
from tuner.errors import RunError, StorageError, UsageError
from tuner.kinds import KINDS, TUNED, StudyKind, Task, config_record, kind_of
from tuner.kinds.growth import grow
from tuner.kinds.growth import summary as growth_line
from tuner.kinds.setup import check_existing, enqueue, record_run, setup_study
from tuner.options import (
    TuneOptions,
    check_options,
    parse_devices,
    parse_pairs,
    worker_devices,
)
from tuner.read.results import one_federation
from tuner.run.applies import check_used, ignored_line
from tuner.run.progress import Progress
from tuner.search.space import parse_space
from tuner.store.adapter import study_id_of
from tuner.store.db import count_trials, database_errors, open_storage, quiet_optuna
from tuner.store.records import RunRecord
from tuner.store.storage import check_storage, mask
from tuner.views.notes import write_notes
from tuner.worker.budget import enqueue_missing_retries
from tuner.worker.fleet import (
    DIGEST_ATTR,
    SETTINGS_ATTR,
    bundle_digest,
    check_bundle,
    record_bundle,
    record_settings,
)
from tuner.worker.interrupts import raise_swallowed
from tuner.worker.lifecycle import abandon_running
from tuner.worker.pool import (
    MAX_CONSECUTIVE_FAILURES,
    WorkerReport,
    load_bundle_once,
    run_in_thread,
    sigterm_as_interrupt,
    stop_thread,
    stop_workers,
    worker_specs,
)

Say = Callable[[str], None]


@dataclass
class RunSummary:
    studies: dict[str, int]  # name -> study id
    reports: list[WorkerReport] = field(default_factory=list)
    seconds: float = 0.0
    finished: int = 0  # trials finished during this run
    #: The options the run was served with (for a joining worker: the run's settings with its
    #: own applied; the caller's options are never changed).
    opts: TuneOptions | None = None


def plan(opts: TuneOptions) -> tuple[StudyConfig, list[Task], list[str]]:
    """Validate everything that needs no database; return the config, the tasks and devices
    (raises a DkdError with one line)."""
    check_options(opts)
    config = load_config(opts.config, opts.overrides)
    kind = TUNED[opts.mode]
    space = kind.run_space(config, parse_space(config.search, config.source))
    targets = kind.run_targets(config, opts)
    check_used(opts, phases(opts))
    tasks = [
        Task(
            kind.study_name(config.name, t),
            kind.name,
            tuple(t),
            config,
            space,
            opts.trials,
            strategy=opts.strategy if kind.races else None,
        )
        for t in targets
    ]
    return config, tasks, parse_devices(opts.devices)


def phases(opts: TuneOptions) -> list[list[StudyKind]]:
    """The kinds of studies a tuning run serves, phase by phase: its mode's studies, then, with
    ``--confirm K`` where a kind confirms them (the pair studies'), their confirmation."""
    kind = TUNED[opts.mode]
    then = kind.confirmed_by if opts.confirm else None
    return [[kind], [KINDS[then]]] if then else [[kind]]


def start(
    opts: TuneOptions, tasks: Sequence[Task], devices: list[str], say: Say, headline: str
) -> RunSummary:
    """Check the storage, set the tasks' studies up (nothing is written before every check
    passed) and serve them with the pool."""
    for config in {t.config.name: t.config for t in tasks}.values():
        # The federation's data, partition and (the user's own) participants, read and checked
        # now: a bad checkpoint or partition file is refused before a storage is touched. A
        # bundle already built was checked when it was; its hash still reads every file named.
        if not (bundle_path(config, opts.bundles) / "meta.json").is_file():
            check_federation(config)
    check_storage(opts.storage)
    with database_errors(opts.storage):
        storage = open_storage(opts.storage)
        growths = check_existing(storage, opts.storage, tasks)
        # Nothing was written up to here. From now on the run creates what it needs.
        say(headline)
        bundles = {
            t.config.name: load_bundle_once(t.config, opts.bundles, devices[0], progress=say)
            for t in tasks
        }
        for name, bundle in bundles.items():
            check_bundle(storage, opts.storage, [t.study for t in tasks if t.config.name == name],
                         bundle)  # fmt: skip
        for name, growth in growths.items():  # a federation grown: its unchanged pairs join it
            config = next(t.config for t in tasks if t.config.name == name)
            grow(storage, config, growth, {DIGEST_ATTR: bundle_digest(bundles[name])})
            if line := growth_line(name, growth):
                say(line)
        ids = {t.study: _set_up(storage, opts, t, bundles[t.config.name]) for t in tasks}
        return run_tasks(opts, tasks, devices, storage, ids, say)


def _set_up(
    storage: optuna.storages.RDBStorage, opts: TuneOptions, task: Task, bundle: FederationBundle
) -> int:
    """One study from its creation to ready for workers, in order: created or joined with its
    kind's attrs and queue (tuner.kinds.setup), the run's record and the bundle's digest, the
    retries its failed trials lack, then a fixed kind's missing trials (after the retries: what
    is still missing), and last the worker settings a joining worker takes unless told otherwise
    (written last: a study holding them is set up). Returns its id."""
    kind = KINDS[task.kind]
    study_id = setup_study(storage, opts.storage, task, bundle)
    record_run(storage, study_id, RunRecord(
        budget=task.budget, sampler=opts.sampler, pruner=opts.pruner, seed=opts.seed,
        retries=opts.retries, max_forgetting=opts.max_forgetting, warm_start=opts.warm_start,
        confirm=opts.confirm if kind.confirmed_by else 0,
        min_gain=opts.min_gain if kind.races else None,
    ))  # fmt: skip
    record_bundle(storage, [study_id], bundle)
    enqueue_missing_retries(optuna.load_study(study_name=task.study, storage=storage),
                            opts.retries)  # fmt: skip
    if kind.fixed:
        enqueue(storage, task)
    # A joining worker never rewrites these: its own --precision or heartbeat are its alone.
    record_settings(storage, [study_id], _settings(opts))
    return study_id


def join(
    opts: TuneOptions, federation: str | None, say: Say = print, *, own: Sequence[str] = ()
) -> RunSummary:
    """``dkd-tune worker``: add workers to the run recorded in the storage, whatever its kinds
    (pair, client, compare or confirmation studies). The studies hold the config, budget,
    sampler, pruner and worker settings; the options named in ``own`` (config, pairs, trials, or a
    worker setting: precision, batch_trials, heartbeat) are this
    worker's instead: its own config file (same federation hash and KD recipe, e.g. another data
    path), a subset of the pairs, another budget, its precision or heartbeat. The worker's bundle
    must be the run's (digest check); it is never built here."""
    quiet_optuna()
    check_options(opts)
    devices = parse_devices(opts.devices)
    check_storage(opts.storage)
    with database_errors(opts.storage):
        storage = open_storage(opts.storage)
        runs = {
            s.study_name: (s, run)
            for s in one_federation(storage, opts.storage, federation, what="dkd-tune run",
                                    fix="start one with dkd-tune --storage ... first",
                                    writes=True)
            if (run := RunRecord.from_attrs(s.user_attrs)) is not None
        }  # fmt: skip
        if not runs:
            raise StorageError(
                f"no dkd-tune run in {mask(opts.storage)}: start one with dkd-tune --storage ..."
            )
        studies = [s for s, _ in runs.values()]
        first, first_run = next(iter(runs.values()))
        tasks = [kind_of(s.user_attrs).task_from(s.study_name, s.user_attrs, run.budget)
                 for s, run in runs.values()]  # fmt: skip
        if "config" in own:
            config = _own_config(opts, tasks[0].config, first.user_attrs)
            tasks = [dataclasses.replace(t, config=config) for t in tasks]
        if "pairs" in own:
            tasks = _own_pairs(opts, tasks)
        if "trials" in own:
            tasks = [
                t if t.budget is None else dataclasses.replace(t, budget=opts.trials) for t in tasks
            ]
        opts = joined_options(opts, first_run, first.user_attrs, own)
        check_options(opts)
        check_used(opts, [[KINDS[k] for k in dict.fromkeys(t.kind for t in tasks)]])
        for config in {t.config.name: t.config for t in tasks}.values():
            path = bundle_path(config, opts.bundles)
            if not (path / "meta.json").is_file():
                raise StorageError(
                    f"no bundle of federation {config.name} at {path}: a worker uses the run's "
                    "bundle, never builds its own; share that folder (--bundles DIR or "
                    "$DKD_TUNE_BUNDLES) or copy it from the machine that started the run"
                )
            bundle = load_bundle_once(config, opts.bundles, devices[0], progress=say)
            check_bundle(storage, opts.storage, [t.study for t in tasks], bundle)
        ids = {
            s.study_name: study_id_of(s)
            for s in studies
            if s.study_name in {t.study for t in tasks}
        }
        say(f"joining {len(ids)} studies of {tasks[0].config.name} ({_budgets(tasks)})")
        return run_tasks(opts, tasks, devices, storage, ids, say)


def joined_options(
    opts: TuneOptions, run: RunRecord, attrs: dict, own: Sequence[str]
) -> TuneOptions:
    """A joining worker's options: the run's (a stored study's ``run`` record and the worker
    settings in its ``attrs``), with the worker's ``own`` options kept; the one place they are
    combined. Its seed differs from the run's, so it samples other points."""
    stored = {
        "sampler": run.sampler,
        "pruner": run.pruner,
        "max_forgetting": run.max_forgetting,
        "warm_start": run.warm_start,
        "seed": run.seed + 7_919,
        "retries": run.retries,
        "confirm": run.confirm,
        # None: a run of a kind that answers nothing keeps the worker's own (its default).
        "min_gain": opts.min_gain if run.min_gain is None else run.min_gain,
        **({} if "trials" in own else {"trials": run.budget or opts.trials}),
        **{k: v for k, v in attrs.get(SETTINGS_ATTR, {}).items()
           if k not in own and k in TuneOptions.__dataclass_fields__},
    }  # fmt: skip
    return dataclasses.replace(opts, **stored)


def _settings(opts: TuneOptions) -> dict:
    """The worker settings of a run, as recorded for joining workers."""
    return {
        "precision": opts.precision,
        "batch_trials": opts.batch_trials,
        "heartbeat_interval": opts.heartbeat_interval,
        "heartbeat_grace": opts.heartbeat_grace,
    }


def _budgets(tasks: Sequence[Task]) -> str:
    budgets = sorted({t.budget for t in tasks if t.budget is not None})
    fixed = sum(t.budget is None for t in tasks)
    parts = [f"{'/'.join(map(str, budgets))} trials each"] if budgets else []
    return ", ".join(parts + ([f"{fixed} with queued trials"] if fixed else []))


def _own_config(opts: TuneOptions, stored: StudyConfig, attrs: dict) -> StudyConfig:
    """The worker's own config file, which must describe the run's federation and KD round."""
    config = load_config(opts.config, opts.overrides)
    fix = f"pass the run's config (or none: the studies hold it) instead of {opts.config}"
    if config.federation_hash != stored.federation_hash:
        raise UsageError(
            f"--config gives federation hash {config.federation_hash}, the run has "
            f"{stored.federation_hash}: {fix}"
        )
    if config.name != stored.name or config_record(config)["kd"] != attrs.get("kd_recipe"):
        raise UsageError(f"--config names another federation or KD recipe than the run: {fix}")
    return config


def _own_pairs(opts: TuneOptions, tasks: list[Task]) -> list[Task]:
    """The pair studies (and their confirmations) of ``--pairs``, each of which must exist."""
    wanted = set(parse_pairs(opts.pairs, tasks[0].config.federation.participants))
    have = {t.target for t in tasks if KINDS[t.kind].per_pair}
    missing = wanted - have
    if missing:
        a, b = sorted(missing)[0]
        raise UsageError(
            f"pair {a}-{b} is not part of the run in {mask(opts.storage)}: pick --pairs among "
            "its studies (dkd-tune status lists them), or start it with dkd-tune --pairs"
        )
    return [t for t in tasks if KINDS[t.kind].per_pair and t.target in wanted]


def prepare(opts: TuneOptions, say: Say = print) -> list[dict]:
    """``dkd-tune prepare``: build (or load) the federation bundle; return its summary."""
    config, _, devices = plan(opts)
    bundle = load_bundle_once(config, opts.bundles, devices[0], progress=say)
    return bundle.summary()


def run_tasks(
    opts: TuneOptions,
    tasks: Sequence[Task],
    devices: list[str],
    storage: optuna.storages.RDBStorage,
    ids: dict[str, int],
    say: Say,
) -> RunSummary:
    """Serve the tasks' (set-up) studies with the pool until their work is done; then write the
    dashboard notes. Worker settings are recorded so that ``dkd-tune worker`` can join."""
    kinds = [KINDS[k] for k in dict.fromkeys(t.kind for t in tasks)]
    line = ignored_line(opts, kinds, "/".join(k.name for k in kinds) + " studies")
    if line:
        say(line)
    with database_errors(opts.storage):
        started = time.monotonic()
        before = sum(c.finished for c in count_trials(storage, ids.values()).values())
        progress = Progress(storage, tasks, ids, mode=opts.progress)
    specs = worker_specs(
        worker_devices(devices, opts.workers, opts.workers_per_device),
        list(tasks),
        opts,
        log=progress.mode == "log",
    )
    with sigterm_as_interrupt():
        thread, box = run_in_thread(specs)
        try:
            while thread.is_alive():
                thread.join(timeout=1.0)
                raise_swallowed()
                with database_errors(opts.storage):
                    progress.poll(final=not thread.is_alive())
        except BaseException:  # Ctrl-C, or the database went away under the progress line
            abandon_running("interrupted (Ctrl-C)")  # the in-process worker's trial
            stop_workers()  # worker processes mark theirs; stragglers are terminated
            stop_thread(thread)  # and the in-process worker ends before the interpreter does
            raise
    if "error" in box:
        error = box["error"]
        with database_errors(opts.storage):
            raise error
    with database_errors(opts.storage):
        return _finish(opts, tasks, storage, ids, box["reports"], started, before, say)


def _finish(
    opts: TuneOptions,
    tasks: Sequence[Task],
    storage: optuna.storages.RDBStorage,
    ids: dict[str, int],
    reports: list[WorkerReport],
    started: float,
    before: int,
    say: Say,
) -> RunSummary:
    counts = count_trials(storage, ids.values())
    after = sum(c.finished for c in counts.values())
    summary = RunSummary(ids, reports, time.monotonic() - started, after - before, opts)
    for rep in summary.reports:
        if rep.died:
            say(
                f"worker {rep.index} ({rep.device}) {rep.died}; a heartbeat check fails its "
                "running trial, which is then retried"
            )
    short = [t.study for t in tasks if KINDS[t.kind].work_left(counts[ids[t.study]], t)]
    if short and any(rep.died for rep in summary.reports):
        raise RunError(
            f"{len(short)} stud(ies) short of their trials after a worker died, e.g. "
            f"{short[0]}: rerun the same command to top them up"
        )
    # Each pair study's note: default vs best (notes are the pair studies'; others are skipped).
    write_notes(storage, opts.storage, [t.study for t in tasks])
    gave_up = {n: r for rep in summary.reports for n, r in rep.gave_up.items()}
    if gave_up:
        name, reason = next(iter(gave_up.items()))
        raise RunError(
            f"{len(gave_up)} stud(ies) stopped after {MAX_CONSECUTIVE_FAILURES} failures in a "
            f"row, e.g. {name}: {reason} "
            "(fix the KD recipe, then rerun: failed trials do not count)"
        )
    return summary
