"""``dkd-tune compare``: the Molo et al. poster's full factorial on a two-head federation.

Every divergence × aggregation at the config's ``[compare]`` T and α, ``seeds`` times, on one
federation per ``[compare].partitions`` entry (the config's federation with only the partition
changed: iid and Dirichlet 0.5 by default). One cell run is one round of the whole federation;
its trials are a compare study's queue (tuner.kinds.cell), served by the worker pool like any
other kind: ``--workers N`` spreads the cells, ``dkd-tune worker`` joins from other machines, a
rerun runs only the missing ones, and an interrupted run keeps what it finished. Seeds are shared
across cells (the same fresh head 2 and batch order for every divergence and aggregation), so
cells differ only by what they compare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from objectives import AGGREGATIONS, DIVERGENCES, StudyConfig, load_config, parse_config
from objectives.config import parse_partitions
from tuner.errors import UsageError
from tuner.kinds import KINDS, Task, config_record
from tuner.kinds.cell import MAX_SEEDS, cells
from tuner.options import COMPARE_CONFIG, DEFAULT_STORAGE, TuneOptions, check_options, parse_devices
from tuner.read.results import Cell, read_cells
from tuner.run.start import start
from tuner.store.db import open_storage, quiet_optuna
from tuner.store.storage import mask

Say = Callable[[str], None]


@dataclass
class CompareOptions:
    """One ``dkd-tune compare``; ``seeds``/``partitions`` None take the config's ``[compare]``."""

    config: str = COMPARE_CONFIG
    storage: str = DEFAULT_STORAGE
    overrides: list[str] = field(default_factory=list)
    bundles: str | None = None
    devices: str = "auto"
    seeds: int | None = None
    partitions: str | None = None  # e.g. "iid,dirichlet:0.5"
    workers: int | None = None
    workers_per_device: int | None = None
    retries: int = 2
    progress: str = "quiet"
    heartbeat_interval: float | None = None
    heartbeat_grace: float | None = None

    def pool(self) -> TuneOptions:
        """The worker-pool options of this compare run."""
        return TuneOptions(
            config=self.config, storage=self.storage, overrides=tuple(self.overrides),
            bundles=self.bundles, devices=self.devices, workers=self.workers,
            workers_per_device=self.workers_per_device, retries=self.retries,
            progress=self.progress,
            **{k: v for k, v in (("heartbeat_interval", self.heartbeat_interval),
                                 ("heartbeat_grace", self.heartbeat_grace)) if v is not None},
        )  # fmt: skip


def partition_label(partition: str) -> str:
    """A federation-name-safe form of a partition spec: ``dirichlet:0.5`` → ``dirichlet0.5``."""
    return partition.replace(":", "")


def federations(config: StudyConfig, partitions: Sequence[str]) -> list[StudyConfig]:
    """One config per partition: the given one where the partition is its own (its bundle is
    reused), else a copy named ``<name>-<partition>`` with only the partition changed."""
    out = []
    for spec in partitions:
        if spec == config.federation.partition:
            out.append(config)
            continue
        raw = config_record(config)
        raw["federation"]["partition"] = spec
        raw["name"] = f"{config.name}-{partition_label(spec)}"
        out.append(parse_config(raw, source=f"{config.source} ({spec})"))
    return out


def _partitions(opts: CompareOptions, config: StudyConfig) -> list[str]:
    if opts.partitions is None:
        return list(config.compare.partitions)
    specs = [s.strip() for s in opts.partitions.split(",") if s.strip()]
    return list(parse_partitions(specs, f"--partitions {opts.partitions}"))


def _seeds(opts: CompareOptions, config: StudyConfig) -> int:
    seeds = config.compare.seeds if opts.seeds is None else opts.seeds
    if not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds {seeds} must be a whole number in 1..{MAX_SEEDS}, e.g. 3")
    return seeds


def run_compare(opts: CompareOptions, say: Say = print) -> list[Cell]:
    """Run every missing cell × seed of every federation on the pool; return the table's cells."""
    quiet_optuna()
    pool = opts.pool()
    check_options(pool)
    base = load_config(opts.config, opts.overrides)
    base.check_two_heads()
    seeds = _seeds(opts, base)
    configs = federations(base, _partitions(opts, base))
    devices = parse_devices(opts.devices)
    kind = KINDS["compare"]
    wanted = cells(seeds)
    tasks = [Task(kind.study_name(c.name, ()), kind.name, (), c, wanted=wanted) for c in configs]
    c = base.compare
    start(
        pool, tasks, devices, say,
        f"compare: {len(DIVERGENCES)} divergences x {len(AGGREGATIONS)} aggregations x {seeds} "
        f"seed(s) on {len(configs)} federation(s), T={c.temperature:g}, alpha={c.alpha:g}, "
        f"transfer set {base.neighbourhood.transfer_set}, {base.topology.kind} graph, "
        f"storage {mask(pool.storage)}",
    )  # fmt: skip
    return read_cells(open_storage(opts.storage), [cfg.name for cfg in configs])
