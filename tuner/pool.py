"""The worker pool: joblib (loky) processes, each bound to one device, taking trials until every
pair study has its budget.

Each worker loads the bundle once, opens the process's single storage, and then repeatedly takes
one trial from the pair study with the most work left (ties broken at random, so workers spread
over pairs and all pairs progress together). Everything it decides on is read from the database,
so workers of other processes or machines (``dkd-tune worker``) cooperate without talking.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import joblib
import optuna
import torch

from objectives import FederationBundle, StudyConfig, prepare_federation

from .budget import count_trials
from .neighbourhood import run_client_trial
from .options import Pair, cpu_cores
from .space import SearchSpace
from .storage import get_storage
from .trials import Outcome, run_pair_trial

#: A worker stops working on a pair after this many failures in a row there (e.g. a KD recipe
#: whose loss always turns NaN), instead of retrying forever.
MAX_CONSECUTIVE_FAILURES = 5

_BUNDLES: dict[str, FederationBundle] = {}  # per process: the parent's bundle serves workers=1


@dataclass
class WorkerSpec:
    """Everything a worker process needs, as plain picklable data."""

    index: int
    device: str
    threads: int
    url: str
    config: StudyConfig
    bundles: str | None
    space: SearchSpace
    studies: dict[str, Pair]  # study name -> pair
    budget: int
    sampler: str
    pruner: str
    seed: int
    retries: int
    log: bool = False  # one line per trial on stdout (when the parent shows no live line)
    mode: str = "pair"  # neighbourhood: client studies, whose trials run_client_trial runs


@dataclass
class WorkerReport:
    index: int
    device: str
    outcomes: dict[str, int] = field(default_factory=dict)  # state -> count
    gave_up: dict[str, str] = field(default_factory=dict)  # study -> last failure reason


def load_bundle_once(
    config: StudyConfig,
    bundles: str | None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> FederationBundle:
    """The federation bundle, loaded (or built) at most once per process."""
    if config.federation_hash not in _BUNDLES:
        _BUNDLES[config.federation_hash] = prepare_federation(
            config, directory=bundles, device=device, progress=progress
        )
    return _BUNDLES[config.federation_hash]


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler that leaves stopping to the budget: its own after_trial calls study.stop()
    once the grid is covered, which raises outside study.optimize (we ask and tell). Past that
    point it revisits grid points at random, which the budget then bounds."""

    def after_trial(self, study, trial, state, values) -> None:  # type: ignore[override]
        return None


def make_sampler(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _GridSampler(space.grid(), seed=seed)
    # constant_liar: running trials count as bad guesses, so parallel workers do not all
    # sample the same promising point.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(name: str, eval_points: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, eval_points))
    return optuna.pruners.NopPruner()


def work(spec: WorkerSpec) -> WorkerReport:
    """One worker: bind the device, load the bundle, take trials until no pair has work left."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.device == "cpu":
        torch.set_num_threads(spec.threads)
    elif spec.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(spec.device))
    storage = get_storage(spec.url)
    bundle = load_bundle_once(spec.config, spec.bundles, spec.device)
    ids = {name: storage.get_study_id_from_name(name) for name in spec.studies}
    counts = count_trials(storage, ids.values())
    studies: dict[str, optuna.Study] = {}
    for i, name in enumerate(spec.studies):
        # A different sampler seed per worker, pair and restart: identical seeds would make
        # parallel workers (and a rerun's random sampler) propose the same points again.
        total = sum(vars(counts[ids[name]]).values())
        seed = hash((spec.seed, spec.index, i, total)) % 2**31
        studies[name] = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=make_sampler(spec.sampler, spec.space, seed),
            pruner=make_pruner(spec.pruner, spec.config.kd.eval_points),
        )
    rng = random.Random(hash((spec.seed, spec.index)))
    report = WorkerReport(spec.index, spec.device)
    failures: dict[str, int] = dict.fromkeys(spec.studies, 0)
    while True:
        counts = count_trials(storage, ids.values())
        open_ = [
            (counts[ids[n]].left(spec.budget), rng.random(), n)
            for n in spec.studies
            if failures[n] < MAX_CONSECUTIVE_FAILURES and counts[ids[n]].left(spec.budget) > 0
        ]
        if not open_:
            return report
        name = max(open_)[2]
        run_one = run_client_trial if spec.mode == "neighbourhood" else run_pair_trial
        outcome = run_one(
            studies[name],
            bundle,
            spec.space,
            spec.studies[name],
            budget=spec.budget,
            device=spec.device,
            seed=spec.seed,
            retries=spec.retries,
            recipe=spec.config.kd,
        )
        report.outcomes[outcome.state] = report.outcomes.get(outcome.state, 0) + 1
        if outcome.state == "failed":
            failures[name] += 1
            if failures[name] >= MAX_CONSECUTIVE_FAILURES:
                report.gave_up[name] = outcome.reason
        elif outcome.state != "surplus":
            failures[name] = 0
        if spec.log and outcome.state != "surplus":
            print(_log_line(name, outcome, spec), flush=True)


def _log_line(name: str, outcome: Outcome, spec: WorkerSpec) -> str:
    p = outcome.params
    what = (
        f"T={p.get('temperature', 0):.3g} alpha={p.get('alpha', 0):.2f} {p.get('divergence')} "
        + (
            f"{p.get('transfer_set')}{'/' + p['aggregation'] if 'aggregation' in p else ''} "
            f"student={p.get('position')}"
            if spec.mode == "pair"
            else f"{p.get('aggregation')} over the neighbours"
        )
    )
    result = f"gain {outcome.gain:+.2f}" if outcome.gain is not None else outcome.state
    tail = f" ({outcome.reason})" if outcome.state == "failed" else ""
    return f"{name} #{outcome.number} {result} {what} [worker {spec.index} {spec.device}]{tail}"


def worker_specs(workers: int, devices: list[str], **common) -> list[WorkerSpec]:
    """Worker i takes devices[i % len(devices)]. CPU threads are split among the CPU workers so
    they never oversubscribe the cores (torch would otherwise give each worker all of them)."""
    on_cpu = sum(1 for i in range(workers) if devices[i % len(devices)] == "cpu")
    threads = max(1, cpu_cores() // max(1, on_cpu))
    return [
        WorkerSpec(index=i, device=devices[i % len(devices)], threads=threads, **common)
        for i in range(workers)
    ]


def run_pool(specs: list[WorkerSpec]) -> list[WorkerReport]:
    """Run the workers to the end: in this process for one worker (the bundle is already loaded
    here), else as loky processes."""
    if len(specs) == 1:
        return [work(specs[0])]
    parallel = joblib.Parallel(n_jobs=len(specs), backend="loky")
    return list(parallel(joblib.delayed(work)(s) for s in specs))


def run_in_thread(specs: list[WorkerSpec]) -> tuple[threading.Thread, dict]:
    """Start :func:`run_pool` in a thread so the caller can show progress meanwhile; the dict
    receives ``reports`` or ``error``."""
    box: dict = {}

    def target() -> None:
        try:
            box["reports"] = run_pool(specs)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            box["error"] = exc

    thread = threading.Thread(target=target, name="dkd-tune-pool", daemon=True)
    thread.start()
    return thread, box


__all__ = [
    "WorkerReport",
    "WorkerSpec",
    "load_bundle_once",
    "run_in_thread",
    "run_pool",
    "worker_specs",
]
