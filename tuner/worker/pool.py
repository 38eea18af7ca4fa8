"""The worker pool: one process per worker (``python -m tuner.worker.process``), each bound to
one device, taking trials until every study it serves has its work done.

A worker serves tasks (tuner.kinds.Task: a study of any kind). It loads each federation's bundle
once, opens the process's single storage, and then repeatedly takes one trial from the study
with the most work left (ties broken at random, so workers spread over studies and all progress
together; a strategy that staggers its pairs has them served in the run's order instead); trials
of a batchable kind are taken K at once with ``--batch-trials K``. Everything
it decides on is read from the database, so workers of other processes or machines
(``dkd-tune worker``) cooperate without talking.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch

from objectives import FederationBundle, StudyConfig, bundle_path, prepare_federation
from tuner.kinds import KINDS, Task
from tuner.options import TuneOptions, cpu_cores
from tuner.store.db import count_trials, database_errors, open_storage, quiet_optuna
from tuner.strategies import strategy
from tuner.worker.heartbeat import Heartbeat
from tuner.worker.lifecycle import Outcome, Settings, run_batch, run_one, running_ids

#: A worker stops working on a pair after this many failures in a row there (e.g. a KD recipe
#: whose loss always turns NaN), instead of retrying forever.
MAX_CONSECUTIVE_FAILURES = 5
#: Seconds between looks at the database while a worker waits for other workers' last trials.
WAIT_S = 1.0
#: Seconds an interrupted worker process gets to mark its trial FAIL before it is terminated,
#: and a terminated one before it is killed.
STOP_GRACE_S = 5.0

_BUNDLES: dict[str, FederationBundle] = {}  # per process and folder: the parent's serves workers=1


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, as plain picklable data: where it runs, what it
    serves, and the run's options (the one frozen TuneOptions, unchanged from the command line)."""

    index: int
    device: str
    threads: int
    tasks: list[Task]
    opts: TuneOptions
    log: bool = False  # one line per trial on stdout (when the parent shows no live line)


@dataclass
class WorkerReport:
    index: int
    device: str
    outcomes: dict[str, int] = field(default_factory=dict)  # state -> count
    gave_up: dict[str, str] = field(default_factory=dict)  # study -> last failure reason
    died: str = ""  # how a worker process ended without a report (e.g. "killed by SIGKILL")
    reaped: int = 0  # other workers' trials this worker failed after their heartbeat stopped


def load_bundle_once(
    config: StudyConfig,
    bundles: str | None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> FederationBundle:
    """The federation bundle, loaded (or built) at most once per process and folder (two folders
    may hold different bundles under one federation hash: see tuner.worker.fleet)."""
    key = str(bundle_path(config, bundles).resolve())
    if key not in _BUNDLES:
        _BUNDLES[key] = prepare_federation(
            config, directory=bundles, device=device, progress=progress
        )
    return _BUNDLES[key]


def make_pruner(name: str, eval_points: int) -> optuna.pruners.BasePruner:
    """The pruner deciding at the KD round's evaluation points (``report`` steps 1..k)."""
    if name == "quartile":
        # Stop a trial only in the bottom quarter of the finished ones (Optuna keeps the top 75 %),
        # and not at the first point: early in the round the gain predicts the final one badly
        # (a trial at -8 pp there can end at +5), and a median rule pruned half of the trials
        # that ended within 1 pp of the best (bench/pruner_check.py, bench/RESULTS.md).
        return optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=2)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, eval_points))
    return optuna.pruners.NopPruner()


def work(spec: WorkerSpec) -> WorkerReport:
    """One worker: bind the device, load the bundles, take trials until no study has work."""
    quiet_optuna()
    if spec.device == "cpu":
        torch.set_num_threads(spec.threads)
    elif spec.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(spec.device))
    with database_errors(spec.opts.storage):
        return _work(spec)


def _work(spec: WorkerSpec) -> WorkerReport:
    storage = open_storage(spec.opts.storage)
    # Each federation's bundle once, before the loop (not looked up again per trial).
    folder = spec.opts.bundles
    bundles = {t.config.name: load_bundle_once(t.config, folder, spec.device) for t in spec.tasks}
    ids = {t.study: storage.get_study_id_from_name(t.study) for t in spec.tasks}
    counts = count_trials(storage, ids.values())
    studies: dict[str, optuna.Study] = {}
    for i, task in enumerate(spec.tasks):
        # A different sampler seed per worker, study and restart: identical seeds would make
        # parallel workers (and a rerun's random sampler) propose the same points again.
        c = counts[ids[task.study]]
        total = c.finished + c.running + c.waiting + c.failed
        seed = hash((spec.opts.seed, spec.index, i, total)) % 2**31
        studies[task.study] = optuna.load_study(
            study_name=task.study,
            storage=storage,
            sampler=strategy(task.strategy).make_sampler(spec.opts.sampler, task.space, seed),
            pruner=make_pruner(spec.opts.pruner, task.config.kd.eval_points),
        )
    report = WorkerReport(spec.index, spec.device)
    heartbeat = Heartbeat(
        storage,
        {study_id: name for name, study_id in ids.items()},
        running_ids,
        interval=spec.opts.heartbeat_interval,
        grace=spec.opts.heartbeat_grace,
        retries=spec.opts.retries,
    )
    with heartbeat:
        _take_trials(spec, storage, ids, studies, report, bundles, heartbeat.failing)
    report.reaped = len(heartbeat.reaped)
    return report


def _take_trials(
    spec: WorkerSpec,
    storage: optuna.storages.RDBStorage,
    ids: dict[str, int],
    studies: dict[str, optuna.Study],
    report: WorkerReport,
    bundles: dict[str, FederationBundle],
    failing: contextlib.AbstractContextManager,
) -> None:
    """The worker's loop: pick the study with the most work left, run one trial there (or K of
    a batchable kind), repeat; stop when no study has work left, nothing runs anywhere, and
    this process's heartbeat check is not half-way through failing a trial (``failing``: its
    retry is enqueued after the FAIL)."""
    rng = random.Random(hash((spec.opts.seed, spec.index)))
    tasks = {t.study: t for t in spec.tasks}
    rank = {t.study: i for i, t in enumerate(spec.tasks)}
    failures: dict[str, int] = dict.fromkeys(tasks, 0)
    o = spec.opts
    settings = Settings(spec.device, o.seed, o.retries, o.precision, o.max_forgetting, o.warm_start)
    while True:
        counts = count_trials(storage, ids.values())
        live = [t for t in spec.tasks if failures[t.study] < MAX_CONSECUTIVE_FAILURES]
        left = {t.study: KINDS[t.kind].work_left(counts[ids[t.study]], t) for t in live}
        open_ = [(_priority(tasks[name], n, rank[name]), rng.random(), name)
                 for name, n in left.items() if n > 0]  # fmt: skip
        if not open_:
            # Trials still RUNNING elsewhere may fail yet (a dead worker's, once the heartbeat
            # finds it) and reopen their study: wait for them, or the study could end short.
            if any(counts[ids[t.study]].running for t in live):
                time.sleep(WAIT_S)
                continue
            with failing:  # a retry being enqueued by this process's check lands first
                counts = count_trials(storage, ids.values())
            if any(KINDS[t.kind].work_left(counts[ids[t.study]], t) > 0
                   or counts[ids[t.study]].running for t in live):  # fmt: skip
                continue
            return
        order = [name for _, _, name in sorted(open_, reverse=True)]
        batchable = [n for n in order if KINDS[tasks[n].kind].batchable]
        if spec.opts.batch_trials > 1 and batchable:
            # K trials at once: the slots go to the studies with the most work left.
            picked = pick_slots({n: left[n] for n in batchable}, spec.opts.batch_trials, batchable)
            slots = [(studies[n], tasks[n]) for n in picked]
            bundle = bundles[tasks[picked[0]].config.name]
            outcomes = run_batch(slots, bundle, settings)
        else:
            task = tasks[order[0]]
            bundle = bundles[task.config.name]
            outcomes = [(task.study, run_one(studies[task.study], task, bundle, settings))]
        for name, outcome in outcomes:
            report.outcomes[outcome.state] = report.outcomes.get(outcome.state, 0) + 1
            if outcome.state == "failed":
                failures[name] += 1
                if failures[name] >= MAX_CONSECUTIVE_FAILURES:
                    report.gave_up[name] = outcome.reason
            elif outcome.state not in ("surplus", "lost", "empty"):
                failures[name] = 0
            if spec.log and outcome.state not in ("surplus", "empty"):
                print(_log_line(name, outcome, tasks[name], spec), flush=True)


def _priority(task: Task, left: int, rank: int) -> tuple[int, int]:
    """How much a worker wants to serve ``task`` next (higher first; ties at random): the most
    work left, or, for a strategy that staggers its pairs, the first in the run's order (ahead
    of any study that does not stagger)."""
    if strategy(task.strategy).staggered:
        return (1, -rank)
    return (0, left)


def pick_slots(left: dict[str, int], k: int, order: list[str]) -> list[str]:
    """Up to ``k`` study names for one batch: each slot goes to the study with the most work
    left once the slots already given are counted (``order`` breaks ties), never past its
    ``left``; a study may get several slots."""
    remaining = dict(left)
    slots: list[str] = []
    rank = {name: i for i, name in enumerate(order)}
    while len(slots) < k:
        open_ = [n for n in order if remaining.get(n, 0) > 0]
        if not open_:
            break
        name = max(open_, key=lambda n: (remaining[n], -rank[n]))
        remaining[name] -= 1
        slots.append(name)
    return slots


def _log_line(name: str, outcome: Outcome, task: Task, spec: WorkerSpec) -> str:
    if outcome.state == "stopped":
        return f"{name}: {outcome.reason} [worker {spec.index} {spec.device}]"
    kind = KINDS[task.kind]
    what = kind.describe(outcome.params) if outcome.params else ""
    result = (
        f"{kind.value_name} {outcome.value:+.2f}" if outcome.value is not None else outcome.state
    )
    tail = f" ({outcome.reason})" if outcome.state == "failed" else ""
    return f"{name} #{outcome.number} {result} {what} [worker {spec.index} {spec.device}]{tail}"


def worker_specs(
    devices: list[str], tasks: list[Task], opts: TuneOptions, *, log: bool = False
) -> list[WorkerSpec]:
    """Worker i runs on devices[i] (see options.worker_devices). CPU threads are split among the
    CPU workers so they never oversubscribe the cores (torch would give each worker all)."""
    on_cpu = sum(1 for d in devices if d == "cpu")
    threads = max(1, cpu_cores() // max(1, on_cpu))
    return [
        WorkerSpec(index=i, device=device, threads=threads, tasks=tasks, opts=opts, log=log)
        for i, device in enumerate(devices)
    ]


def run_pool(specs: list[WorkerSpec]) -> list[WorkerReport]:
    """Run the workers to the end: in this process for one worker (the bundle is already loaded
    here), else one process each (tuner.worker.process).

    Plain processes rather than an executor: a worker that dies (SIGKILL, OOM) breaks an
    executor's whole pool, while here the others go on, a heartbeat check fails the dead one's
    trial and they retry it; its report says how it ended.
    """
    if len(specs) == 1:
        return [work(specs[0])]
    children = []
    for spec in specs:
        # Each child is registered as it starts, and none starts once stop_workers began: a
        # Ctrl-C while the pool is still starting its children must reach every one of them
        # (a child started after the terminal's SIGINT never got it, and one stop_workers did
        # not know of would run on, orphaned, with its trials).
        with _SPAWNING:
            if _STOPPING.is_set():
                break
            children.append(_Child(spec))
            _CHILDREN.append(children[-1])
    for child in children:
        child.wait()
    errors = [c.error for c in children if c.error is not None]
    if any(isinstance(e, KeyboardInterrupt) for e in errors):
        raise KeyboardInterrupt
    if errors:
        raise errors[0]
    return [c.report for c in children]  # type: ignore[misc]


@contextlib.contextmanager
def blocked_signals() -> Iterator[None]:
    """Block Ctrl-C and SIGTERM in the calling thread while a worker process is started: the
    child inherits the mask, so a Ctrl-C while it is still importing waits until its handlers
    are in place (tuner.worker.process unblocks them) instead of printing a traceback. The
    parent's own Ctrl-C still reaches its main thread (signal masks are per thread)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _Child:
    """One worker process: the spec goes in on stdin, ``(report, error)`` comes back on a pipe
    of its own (stdout stays the terminal's, for the trial log lines)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.report: WorkerReport | None = None
        self.error: BaseException | None = None
        read, write = os.pipe()
        env = dict(os.environ)
        # The child imports tuner from where this process did, whatever its working folder.
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        with blocked_signals():
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tuner.worker.process", str(write)],
                stdin=subprocess.PIPE,
                pass_fds=(write,),
                env=env,
            )
        os.close(write)
        self._result = b""
        # Read while the child runs: a result larger than the pipe buffer would block it.
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True)
        self._reader.start()
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a child that died at once says so below
            self.proc.stdin.write(pickle.dumps(spec))
            self.proc.stdin.close()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            self._result = pipe.read()

    def wait(self) -> None:
        code = self.proc.wait()
        self._reader.join()
        if self._result:
            self.report, self.error = pickle.loads(self._result)
        else:  # it ended without a word: killed, or died in the interpreter
            self.report = WorkerReport(self.spec.index, self.spec.device, died=_how_it_ended(code))

    def is_alive(self) -> bool:
        return self.proc.poll() is None


#: This process's worker processes, for stop_workers (called from the main thread).
_CHILDREN: list[_Child] = []
#: Held while a child is started; stop_workers sets _STOPPING under it, so after that no child
#: starts that it would miss.
_SPAWNING = threading.Lock()
_STOPPING = threading.Event()


def _how_it_ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code} without a report"


def stop_workers(grace: float = STOP_GRACE_S) -> None:
    """After Ctrl-C: give the worker processes ``grace`` seconds to mark their trials FAIL and
    exit (a terminal's Ctrl-C reached them too), then SIGTERM them (same effect, for an
    interrupt that reached only this process), then kill what is left."""
    with _SPAWNING:
        _STOPPING.set()
    for action in ("wait", "terminate", "kill"):
        alive = [c.proc for c in _CHILDREN if c.is_alive()]
        if not alive:
            return
        for proc in alive:
            if action == "terminate":
                proc.terminate()
            elif action == "kill":
                proc.kill()
        deadline = time.monotonic() + grace
        for proc in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """In the main thread: SIGTERM (a process manager's stop) ends the run like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt_main)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt_main(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def stop_thread(thread: threading.Thread, grace: float = STOP_GRACE_S) -> None:
    """After Ctrl-C: end the in-process worker (``--workers 1``) too. A thread cannot be
    signalled, so the interrupt is raised in it at its next Python instruction (after the torch
    operation it is in): its trial is failed by its own guard. Without this the interpreter
    would exit under a thread still inside torch, which aborts the process."""
    if thread.is_alive() and thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
        )
        thread.join(timeout=grace)


def run_in_thread(specs: list[WorkerSpec]) -> tuple[threading.Thread, dict]:
    """Start :func:`run_pool` in a thread so the caller can show progress meanwhile; the dict
    receives ``reports`` or ``error``."""
    box: dict = {}
    _STOPPING.clear()  # a new pool (a run may start several: tuning, then confirmation)
    _CHILDREN.clear()

    def target() -> None:
        try:
            box["reports"] = run_pool(specs)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            box["error"] = exc

    thread = threading.Thread(target=target, name="dkd-tune-pool", daemon=True)
    thread.start()
    return thread, box


__all__ = [
    "MAX_CONSECUTIVE_FAILURES",
    "WorkerReport",
    "WorkerSpec",
    "load_bundle_once",
    "make_pruner",
    "pick_slots",
    "run_in_thread",
    "run_pool",
    "sigterm_as_interrupt",
    "stop_thread",
    "stop_workers",
    "worker_specs",
]
