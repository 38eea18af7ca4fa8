"""What a tuning run is asked to do, validated before anything is created.

The CLI fills :class:`TuneOptions`; tests and Python users build it directly. Every check here is
pure (no database, no files written), so bad input can always be refused with one line and
nothing changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from objectives import TrialError
from objectives.config import DEFAULT_STUDY, STUDIES_DIR
from tuner.errors import UsageError
from tuner.strategies import DEFAULT as DEFAULT_STRATEGY
from tuner.strategies import STRATEGIES, UNNAMED

#: The embedded default, shipped as package data: found wherever dkd-tune runs.
DEFAULT_CONFIG = str(STUDIES_DIR / f"{DEFAULT_STUDY}.toml")
#: ``dkd-tune compare``'s default: the shipped two-head federation.
COMPARE_CONFIG = str(STUDIES_DIR / "fashion-mnist-n3.toml")
SAMPLERS = ("tpe", "gp", "random", "grid")
#: The smallest improvement over the default, in pp, that a recommendation is made for (--min-gain).
MIN_GAIN = 0.5
PRUNERS = ("none", "quartile", "median", "hyperband")


@dataclass(frozen=True)
class Mode:
    """A ``--mode``: what a tuning run tunes. Named as the kind of its studies (tuner.kinds, the
    kinds' table, owns what a mode does: its targets, space, phases); here only what a run's
    settings need before any kind is loaded: the option that picks its studies (``targets``, a
    TuneOptions field) and whether they are raced (``--strategy`` and its defaults apply; the
    kind's ``races``, which tests/tuner/test_kinds_contract.py holds equal)."""

    name: str
    targets: str
    raced: bool


#: Every mode by name: pair, one study per participant pair; neighbourhood, one per client.
MODES: dict[str, Mode] = {
    m.name: m for m in (Mode("pair", "pairs", raced=True),
                        Mode("neighbourhood", "clients", raced=False))
}  # fmt: skip

Pair = tuple[int, int]


#: The study database when no --storage is given: a SQLite file in the working directory.
DEFAULT_STORAGE = "sqlite:///dkd-tune.db"
#: Defaults of --heartbeat-interval and --heartbeat-grace (seconds): a dead worker's trial is
#: retried within about 40 s; a live worker would have to stall 30 s to be declared dead.
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_GRACE_S = 30.0


def check_heartbeat(interval: float, grace: float) -> None:
    """Refuse settings under which a live worker could be declared dead (one line)."""
    if not interval >= 1:
        raise UsageError(
            f"--heartbeat-interval {interval} must be >= 1 second (SQLite stamps whole seconds)"
        )
    if not grace >= 2 * interval:
        raise UsageError(
            f"--heartbeat-grace {grace} must be at least twice --heartbeat-interval {interval}, "
            f"e.g. --heartbeat-grace {max(2 * interval, HEARTBEAT_GRACE_S):g}"
        )


@dataclass(frozen=True)
class TuneOptions:
    """One run's settings, from the command line (its flags map one to one onto these fields)
    to every worker process, unchanged on the way: frozen, so a joining worker's own options
    are applied once, into a new object (tuner.run.start.joined_options), and what the pool, the
    worker and each trial use is read from the same object (pool.WorkerSpec carries it)."""

    config: str = DEFAULT_CONFIG
    storage: str = DEFAULT_STORAGE
    pairs: str = "all"
    trials: int | None = None  # None: the strategy's (tuner.strategies)
    workers: int | None = None  # None: workers_per_device on each device (one per GPU, or 1 CPU)
    devices: str = "auto"
    sampler: str | None = None  # None: the strategy's
    pruner: str = "quartile"
    seed: int = 0
    overrides: tuple[str, ...] = ()
    bundles: str | None = None  # None: $DKD_TUNE_BUNDLES or ./bundles
    retries: int = 2  # extra attempts for a failed trial's configuration
    confirm: int | None = None  # fresh seeds per candidate (0: none; None: the strategy's)
    max_forgetting: float | None = None  # pp of local accuracy a recommendation may forget
    warm_start: bool = (
        False  # pair studies try other pairs' good configurations (tuner.search.warm)
    )
    progress: str = "auto"  # auto (live line on a TTY) | live | log | quiet
    workers_per_device: int | None = None  # k workers on every device (instead of --workers N)
    precision: str = "fp32"  # fp32 | bf16 (autocast of the KD steps; objectives.run_trial)
    batch_trials: int = 1  # k trials trained at once per worker (objectives.batched)
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S  # seconds between a worker's beats
    heartbeat_grace: float = HEARTBEAT_GRACE_S  # silence after which a trial is failed, retried
    mode: str = "pair"  # pair | neighbourhood
    clients: str = "all"  # neighbourhood mode: all, or clients like 0,2
    strategy: str = DEFAULT_STRATEGY  # how a pair study spends its budget (tuner.strategies)
    min_gain: float = MIN_GAIN  # pp a tuned configuration must add to be recommended

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", tuple(self.overrides))  # a list from argparse
        # The strategy's defaults, once, here: every reader of the options sees the same values.
        # A mode that is not raced (client studies) takes the unnamed strategy's; an unknown
        # mode or strategy is refused by check_options.
        mode = MODES.get(self.mode)
        raced = mode is not None and mode.raced and self.strategy in STRATEGIES
        name = self.strategy if raced else UNNAMED
        plan = STRATEGIES[name]
        for field_ in ("trials", "confirm", "sampler"):
            if getattr(self, field_) is None:
                object.__setattr__(self, field_, getattr(plan, field_))


def check_options(opts: TuneOptions) -> None:
    """The checks that need neither the config nor the storage."""
    if not isinstance(opts.trials, int) or opts.trials < 1:
        raise UsageError(f"--trials {opts.trials} must be a whole number >= 1, e.g. --trials 20")
    if opts.workers is not None and (not isinstance(opts.workers, int) or opts.workers < 1):
        raise UsageError(f"--workers {opts.workers} must be a whole number >= 1")
    if opts.workers_per_device is not None:
        if opts.workers is not None:
            raise UsageError("give --workers N or --workers-per-device K, not both")
        if not isinstance(opts.workers_per_device, int) or opts.workers_per_device < 1:
            raise UsageError(
                f"--workers-per-device {opts.workers_per_device} must be a whole number >= 1"
            )
    from objectives.trial import PRECISIONS  # torch: only once a run is checked

    if opts.precision not in PRECISIONS:
        raise UsageError(
            f"unknown precision {opts.precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    if not isinstance(opts.batch_trials, int) or opts.batch_trials < 1:
        raise UsageError(
            f"--batch-trials {opts.batch_trials} must be a whole number >= 1 (1: one trial at a "
            "time), e.g. --batch-trials 8 on a GPU"
        )
    check_heartbeat(opts.heartbeat_interval, opts.heartbeat_grace)
    if not isinstance(opts.confirm, int) or opts.confirm < 0 or opts.confirm == 1:
        raise UsageError(
            f"--confirm {opts.confirm}: one seed gives no spread; use 0 (no confirmation) or 2 "
            "and more, e.g. --confirm 3"
        )
    if opts.max_forgetting is not None and not -100 <= opts.max_forgetting <= 100:
        raise UsageError(
            f"--max-forgetting {opts.max_forgetting} is not a share of accuracy: give percentage "
            "points in -100..100, e.g. --max-forgetting 2"
        )
    if opts.retries < 0:
        raise UsageError(f"--retries {opts.retries} must be >= 0")
    if opts.sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler {opts.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if opts.pruner not in PRUNERS:
        raise UsageError(f"unknown pruner {opts.pruner!r}: choose one of {', '.join(PRUNERS)}")
    if opts.strategy not in STRATEGIES:
        raise UsageError(
            f"unknown strategy {opts.strategy!r}: choose one of {', '.join(STRATEGIES)}"
        )
    if not isinstance(opts.min_gain, int | float) or not 0 <= opts.min_gain <= 100:
        raise UsageError(
            f"--min-gain {opts.min_gain} must be percentage points in 0..100, e.g. --min-gain 0.5"
        )
    if opts.mode not in MODES:
        raise UsageError(f"unknown mode {opts.mode!r}: choose one of {', '.join(MODES)}")
    mode = MODES[opts.mode]
    for other in MODES.values():  # each mode's studies are picked by its own option
        if other.targets != mode.targets and getattr(opts, other.targets) != "all":
            raise UsageError(
                f"--{other.targets} is for --mode {other.name}; with --mode {mode.name} pick "
                f"{mode.targets} with --{mode.targets}"
            )
    if opts.progress not in ("auto", "live", "log", "quiet"):
        raise UsageError(f"unknown progress mode {opts.progress!r}: auto, live, log or quiet")


# ASCII digits only, at most 9 of them: \d admits Unicode digits ("٠-١") and int() of a 5,000-digit
# item raises ValueError past the one-line error path (issue 27).
_PAIR = re.compile(r"^\s*([0-9]{1,9})\s*-\s*([0-9]{1,9})\s*$", re.ASCII)
_CLIENT = re.compile(r"^[0-9]{1,9}$", re.ASCII)


def parse_pairs(spec: str, participants: int) -> list[Pair]:
    """``all`` or ``0-1,2-5``: sorted unordered pairs (a < b), each once, all in range."""
    if spec.strip() == "all":
        return [(a, b) for a in range(participants) for b in range(a + 1, participants)]
    pairs: list[Pair] = []
    for item in spec.split(","):
        match = _PAIR.match(item)
        if not match:
            raise UsageError(
                f"bad --pairs item {item.strip()!r}: write all or a-b pairs separated by commas, "
                "e.g. --pairs 0-1,2-5"
            )
        a, b = int(match[1]), int(match[2])
        for p in (a, b):
            if p >= participants:
                raise UsageError(
                    f"--pairs {item.strip()}: participant {p} does not exist, the federation has "
                    f"participants 0..{participants - 1}"
                )
        if a == b:
            raise UsageError(
                f"--pairs {item.strip()}: a participant cannot pair with itself, name two "
                "different participants"
            )
        pair = (min(a, b), max(a, b))
        if pair not in pairs:
            pairs.append(pair)
    return sorted(pairs)


def parse_clients(spec: str, participants: int) -> list[int]:
    """``all`` or ``0,2``: sorted clients, each once, all in range."""
    if spec.strip() == "all":
        return list(range(participants))
    clients: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        if not _CLIENT.match(item):
            raise UsageError(
                f"bad --clients item {item!r}: write all or client numbers separated by commas, "
                "e.g. --clients 0,2"
            )
        if int(item) >= participants:
            raise UsageError(
                f"--clients {item}: client {item} does not exist, the federation has clients "
                f"0..{participants - 1}"
            )
        clients.add(int(item))
    return sorted(clients)


def parse_devices(spec: str) -> list[str]:
    """``auto`` (every GPU, else the CPU), ``cpu`` or ``cuda:0,cuda:1``; each must be a device a
    trial can run on (objectives.check_device: the one rule, so a device that passes here never
    fails every trial later)."""
    import torch  # here, not at import: ``dkd-tune --help`` and ``status`` never need it

    from objectives.trial import check_device

    if spec.strip() == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    devices: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        try:
            device = check_device(item)
        except TrialError as exc:
            raise UsageError(f"--devices {item}: {exc} (or --devices auto)") from None
        devices.append("cpu" if device.type == "cpu" else f"cuda:{device.index or 0}")
    return devices


def worker_devices(devices: list[str], workers: int | None, per_device: int | None) -> list[str]:
    """The device of each worker: ``workers`` of them taking the devices in turn, else
    ``per_device`` (default 1) on every device, so ``--devices auto`` on a machine with 8 GPUs
    starts 8 workers, and on a machine without one a single CPU worker."""
    if workers is not None:
        return [devices[i % len(devices)] for i in range(workers)]
    return [d for d in devices for _ in range(per_device or 1)]


def cpu_cores() -> int:
    """Cores this process may use: the affinity mask (not the machine's total), or fewer where
    $OMP_NUM_THREADS says so (e.g. several ``dkd-tune worker`` processes on one machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cores, int(limit))) if limit.isdigit() and int(limit) > 0 else cores
