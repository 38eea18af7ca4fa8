"""A tuning run from start to end, as library calls the CLI (and tests) make.

Order matters: everything that can be refused is checked before anything is written — options,
config, search space, pairs, devices, the storage URL, and the existing studies' federation hash —
so bad input leaves the database exactly as it was. Only then is the bundle prepared, the pair
studies set up (defaults enqueued once), and the pool started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from objectives import StudyConfig, load_config, parse_config

from .budget import count_trials, enqueue_missing_retries
from .errors import RunError, StorageError, UsageError
from .options import Pair, TuneOptions, check_options, parse_devices, parse_pairs
from .pool import (
    MAX_CONSECUTIVE_FAILURES,
    WorkerReport,
    load_bundle_once,
    run_in_thread,
    worker_specs,
)
from .progress import Progress
from .space import SearchSpace, parse_space
from .storage import check_storage, get_storage, mask
from .studies import check_existing, record_run, setup_study, study_name
from .trials import abandon_running

Say = Callable[[str], None]


@dataclass
class Plan:
    """A validated run: what to tune, where, on which devices."""

    opts: TuneOptions
    config: StudyConfig
    space: SearchSpace
    pairs: list[Pair]
    devices: list[str]


@dataclass
class RunSummary:
    studies: dict[str, int]  # name -> study id
    reports: list[WorkerReport] = field(default_factory=list)
    seconds: float = 0.0
    finished: int = 0  # trials finished during this run


def plan(opts: TuneOptions) -> Plan:
    """Validate everything that needs no database (raises a DkdError with one line)."""
    check_options(opts)
    config = load_config(opts.config, opts.overrides)
    space = parse_space(config.search, config.source)
    pairs = parse_pairs(opts.pairs, config.federation.participants)
    devices = parse_devices(opts.devices)
    return Plan(opts, config, space, pairs, devices)


def tune(opts: TuneOptions, say: Say = print) -> RunSummary:
    """Run a tuning: top every pair study up to ``opts.trials`` finished trials."""
    if opts.mode == "neighbourhood":  # one study per client instead (tuner.neighbourhood)
        from .neighbourhood import tune_neighbourhood

        return tune_neighbourhood(opts, say)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    p = plan(opts)
    check_storage(opts.storage)
    storage = get_storage(opts.storage)
    check_existing(storage, opts.storage, p.config, p.space, p.pairs)
    # Nothing was written up to here. From now on the run creates what it needs.
    say(
        f"federation {p.config.name} ({p.config.federation_hash}), {len(p.pairs)} pair(s), "
        f"{opts.trials} trials each, storage {mask(opts.storage)}"
    )
    bundle = load_bundle_once(p.config, opts.bundles, p.devices[0], progress=say)
    ids: dict[str, int] = {}
    for pair in p.pairs:
        ids[study_name(p.config.name, pair)] = sid = setup_study(
            storage, opts.storage, p.config, bundle, p.space, pair
        )
        record_run(
            storage,
            sid,
            budget=opts.trials,
            sampler=opts.sampler,
            pruner=opts.pruner,
            seed=opts.seed,
            retries=opts.retries,
        )
        enqueue_missing_retries(
            optuna.load_study(study_name=study_name(p.config.name, pair), storage=storage),
            opts.retries,
        )
    return _run(p, opts, storage, ids, say)


def join(opts: TuneOptions, federation: str | None, say: Say = print) -> RunSummary:
    """``dkd-tune worker``: add workers to the run recorded in the storage (no config needed: the
    studies hold their config, budget, sampler and pruner)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_options(opts)
    devices = parse_devices(opts.devices)
    check_storage(opts.storage)
    from .export import pair_studies  # here: export imports nothing of the run

    storage = get_storage(opts.storage)
    studies = [s for s in pair_studies(storage, federation) if "run" in s.user_attrs]
    names = sorted({s.user_attrs["federation"] for s in studies})
    if not names:
        raise StorageError(
            f"no dkd-tune run in {mask(opts.storage)}"
            + (f" for federation {federation}" if federation else "")
            + ": start one with dkd-tune --storage ... first"
        )
    if len(names) > 1:
        raise UsageError(
            f"the storage holds several federations ({', '.join(names)}): pass --federation NAME"
        )
    first = studies[0].user_attrs
    config = parse_config(first["config"], source=f"study {studies[0].study_name}")
    run = first["run"]
    opts.trials, opts.sampler, opts.pruner = run["budget"], run["sampler"], run["pruner"]
    opts.seed, opts.retries = run["seed"] + 7_919, run["retries"]  # other samples than the run's
    space = parse_space(first["search"], f"study {studies[0].study_name}")
    pairs = [tuple(s.user_attrs["pair"]) for s in studies]
    p = Plan(opts, config, space, pairs, devices)  # type: ignore[arg-type]
    load_bundle_once(config, opts.bundles, devices[0], progress=say)
    ids = {s.study_name: s._study_id for s in studies}
    say(f"joining {len(ids)} pair studies of {config.name} ({opts.trials} trials each)")
    return _run(p, opts, storage, ids, say)


def prepare(opts: TuneOptions, say: Say = print) -> list[dict]:
    """``dkd-tune prepare``: build (or load) the federation bundle; return its summary."""
    p = plan(opts)
    bundle = load_bundle_once(p.config, opts.bundles, p.devices[0], progress=say)
    return bundle.summary()


def _run(
    p: Plan, opts: TuneOptions, storage: optuna.storages.RDBStorage, ids: dict[str, int], say: Say
) -> RunSummary:
    started = time.monotonic()
    before = sum(c.finished for c in count_trials(storage, ids.values()).values())
    progress = Progress(storage, ids.values(), opts.trials, mode=opts.progress)
    specs = worker_specs(
        opts.workers,
        p.devices,
        url=opts.storage,
        config=p.config,
        bundles=opts.bundles,
        space=p.space,
        studies={n: p.pairs[i] for i, n in enumerate(ids)},
        budget=opts.trials,
        sampler=opts.sampler,
        pruner=opts.pruner,
        seed=opts.seed,
        retries=opts.retries,
        log=progress.mode == "log",
        mode=opts.mode,
    )
    thread, box = run_in_thread(specs)
    try:
        while thread.is_alive():
            thread.join(timeout=1.0)
            progress.poll(final=not thread.is_alive())
    except KeyboardInterrupt:
        abandon_running("interrupted (Ctrl-C)")  # loky workers see the SIGINT themselves
        raise
    if "error" in box:
        raise box["error"]
    after = sum(c.finished for c in count_trials(storage, ids.values()).values())
    summary = RunSummary(ids, box["reports"], time.monotonic() - started, after - before)
    from .notes import write_notes  # imports optuna-dashboard: only once a run ends

    write_notes(storage, opts.storage, ids)  # each pair study's dashboard note: default vs best
    gave_up = {n: r for rep in summary.reports for n, r in rep.gave_up.items()}
    if gave_up:
        name, reason = next(iter(gave_up.items()))
        raise RunError(
            f"{len(gave_up)} pair(s) stopped after {MAX_CONSECUTIVE_FAILURES} failures in a row, "
            f"e.g. {name}: {reason} "
            "(fix the KD recipe, then rerun: failed trials do not count)"
        )
    return summary
