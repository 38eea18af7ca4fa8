"""A tuning run from start to end, as library calls the CLI (and tests) make.

Order matters: everything that can be refused is checked before anything is written — options,
config, search space, pairs, devices, the storage URL, and the existing studies' federation hash —
so bad input leaves the database exactly as it was. Only then is the bundle prepared, the pair
studies set up (defaults enqueued once), and the pool started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna

from objectives import StudyConfig, bundle_path, check_federation, load_config, parse_config

from .budget import count_trials, enqueue_missing_retries
from .errors import RunError, StorageError, UsageError
from .fleet import SETTINGS_ATTR, check_bundle, record_bundle, record_settings
from .options import (
    Pair,
    TuneOptions,
    check_options,
    parse_devices,
    parse_pairs,
    worker_devices,
)
from .pool import (
    MAX_CONSECUTIVE_FAILURES,
    WorkerReport,
    load_bundle_once,
    run_in_thread,
    sigterm_as_interrupt,
    stop_workers,
    worker_specs,
)
from .progress import Progress
from .space import SearchSpace, parse_space
from .storage import check_storage, get_storage, mask
from .studies import check_existing, config_record, record_run, setup_study, study_name
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
    # The federation's data, partition and (the user's own) participants, read and checked now:
    # a bad checkpoint or partition file is refused before a storage or a bundle is touched.
    check_federation(config)
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
    check_bundle(storage, opts.storage, [study_name(p.config.name, q) for q in p.pairs], bundle)
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


#: Options of ``dkd-tune worker`` that, when given, replace what the run recorded.
JOIN_OWN = (
    "config",
    "pairs",
    "trials",
    "precision",
    "batch_trials",
    "heartbeat_interval",
    "heartbeat_grace",
)


def join(
    opts: TuneOptions, federation: str | None, say: Say = print, *, own: Sequence[str] = ()
) -> RunSummary:
    """``dkd-tune worker``: add workers to the run recorded in the storage. The studies hold the
    config, budget, sampler, pruner and worker settings; the options named in ``own`` (any of
    JOIN_OWN) are this worker's instead: its own config file (same federation hash and KD recipe,
    e.g. another data path), a subset of the pairs, another budget, its precision or heartbeat.
    The worker's bundle must be the run's (digest check); it is never built here."""
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
    if "config" in own:
        config = _own_config(opts, config, first)
    if "pairs" in own:
        wanted = set(parse_pairs(opts.pairs, config.federation.participants))
        missing = wanted - {tuple(s.user_attrs["pair"]) for s in studies}
        if missing:
            a, b = sorted(missing)[0]
            raise UsageError(
                f"pair {a}-{b} is not part of the run in {mask(opts.storage)}: pick --pairs among "
                "its studies (dkd-tune status lists them), or start it with dkd-tune --pairs"
            )
        studies = [s for s in studies if tuple(s.user_attrs["pair"]) in wanted]
    run = first["run"]
    if "trials" not in own:
        opts.trials = run["budget"]
    opts.sampler, opts.pruner = run["sampler"], run["pruner"]
    opts.seed, opts.retries = run["seed"] + 7_919, run["retries"]  # other samples than the run's
    for key, value in first.get(SETTINGS_ATTR, {}).items():
        if key not in own and hasattr(opts, key):
            setattr(opts, key, value)
    check_options(opts)
    space = parse_space(first["search"], f"study {studies[0].study_name}")
    pairs = [tuple(s.user_attrs["pair"]) for s in studies]
    p = Plan(opts, config, space, pairs, devices)  # type: ignore[arg-type]
    path = bundle_path(config, opts.bundles)
    if not (path / "meta.json").is_file():
        raise StorageError(
            f"no bundle of federation {config.name} at {path}: a worker uses the run's bundle, "
            "never builds its own; share that folder (--bundles DIR or $DKD_TUNE_BUNDLES) or "
            "copy it from the machine that started the run"
        )
    bundle = load_bundle_once(config, opts.bundles, devices[0], progress=say)
    ids = {s.study_name: s._study_id for s in studies}
    check_bundle(storage, opts.storage, ids, bundle)
    say(f"joining {len(ids)} pair studies of {config.name} ({opts.trials} trials each)")
    return _run(p, opts, storage, ids, say)


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


def prepare(opts: TuneOptions, say: Say = print) -> list[dict]:
    """``dkd-tune prepare``: build (or load) the federation bundle; return its summary."""
    p = plan(opts)
    bundle = load_bundle_once(p.config, opts.bundles, p.devices[0], progress=say)
    return bundle.summary()


def _run(
    p: Plan, opts: TuneOptions, storage: optuna.storages.RDBStorage, ids: dict[str, int], say: Say
) -> RunSummary:
    if opts.precision != "fp32" and opts.mode != "pair":
        raise UsageError(f"--precision {opts.precision} is for pair studies: drop it")
    if opts.batch_trials != 1 and opts.mode != "pair":
        raise UsageError(f"--batch-trials {opts.batch_trials} is for pair studies: drop it")
    bundle = load_bundle_once(p.config, opts.bundles, p.devices[0])  # loaded already: cached
    check_bundle(storage, opts.storage, ids, bundle)
    record_bundle(storage, ids.values(), bundle)
    settings = {
        "precision": opts.precision,
        "batch_trials": opts.batch_trials,
        "heartbeat_interval": opts.heartbeat_interval,
        "heartbeat_grace": opts.heartbeat_grace,
    }
    record_settings(storage, ids.values(), settings)
    started = time.monotonic()
    before = sum(c.finished for c in count_trials(storage, ids.values()).values())
    progress = Progress(storage, ids.values(), opts.trials, mode=opts.progress)
    specs = worker_specs(
        worker_devices(p.devices, opts.workers, opts.workers_per_device),
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
        **settings,
    )
    with sigterm_as_interrupt():
        thread, box = run_in_thread(specs)
        try:
            while thread.is_alive():
                thread.join(timeout=1.0)
                progress.poll(final=not thread.is_alive())
        except KeyboardInterrupt:
            abandon_running("interrupted (Ctrl-C)")  # the in-process worker's trial
            stop_workers()  # worker processes mark theirs; stragglers are terminated
            raise
    if "error" in box:
        raise box["error"]
    counts = count_trials(storage, ids.values())
    after = sum(c.finished for c in counts.values())
    summary = RunSummary(ids, box["reports"], time.monotonic() - started, after - before)
    for rep in summary.reports:
        if rep.died:
            say(
                f"worker {rep.index} ({rep.device}) {rep.died}; a heartbeat check fails its "
                "running trial, which is then retried"
            )
    short = [n for n in ids if counts[ids[n]].finished < opts.trials]
    if short and any(rep.died for rep in summary.reports):
        raise RunError(
            f"{len(short)} stud(ies) short of {opts.trials} trials after a worker died, e.g. "
            f"{short[0]}: rerun the same command to top them up"
        )
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
