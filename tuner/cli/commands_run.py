"""The commands that run trials: a tuning (no command), ``prepare``, ``worker``, ``confirm``,
``compare``. Each imports the library it calls inside its own function, for start-up time only
(``dkd-tune --help`` needs neither torch's trial code nor plotly)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tuner.errors import UsageError
from tuner.options import COMPARE_CONFIG, MIN_GAIN, MODES, PRUNERS, SAMPLERS, TuneOptions
from tuner.strategies import DEFAULT as DEFAULT_STRATEGY
from tuner.strategies import STRATEGIES

from .common import existing, say
from .flags import (
    BUNDLES,
    FEDERATION,
    HEARTBEAT,
    OVERRIDES,
    POOL,
    PROG,
    STORAGE,
    TRIAL_SETTINGS,
    WORKER_SETTINGS,
    Parser,
    config_flag,
    given,
    parser,
    pool_options,
    whole,
)


def per_strategy(setting: str) -> str:
    """A setting's default under each strategy, for the help (the strategies own them)."""
    return ", ".join(f"{getattr(s, setting)} with --strategy {s.name}" for s in STRATEGIES.values())


def _tune_parser(commands: str) -> Parser:
    p = parser(
        PROG,
        "Tune one-round KD between federation participants: one Optuna study per pair, every "
        "trial stored in the database. Without a command, run a tuning.\n\ncommands "
        f"(see {PROG} COMMAND --help):\n{commands}",
        f"  {PROG} --pairs all --trials 200\n"
        f"  {PROG} --pairs 0-1,2-5 --workers 2 --min-gain 1.0\n"
        f"  {PROG} --strategy fixed --trials 30 --pruner hyperband\n"
        f"  {PROG} --config cifar10-resnet18 --devices cuda:0,cuda:1 --workers 4 \\\n"
        "      --storage postgresql+psycopg://user:pw@db-host/dkd\n"
        f"  {PROG} --set kd.lr=0.02 --set name=fashion-mnist-lr02 --trials 50\n"
        f"  {PROG} --mode neighbourhood --config fashion-mnist-n3 --trials 30",
        parents=[config_flag(), OVERRIDES, BUNDLES, STORAGE, POOL, TRIAL_SETTINGS],
    )
    p.add_argument(
        "--mode",
        default="pair",
        metavar="|".join(MODES),
        help="pair: a study per participant pair (default); neighbourhood: a study per client, "
        "which learns from all its [topology] neighbours at once on a two-head model",
    )
    p.add_argument(
        "--clients",
        default="all",
        metavar="SPEC",
        help="--mode neighbourhood: all, or clients like 0,2 (default all)",
    )
    p.add_argument(
        "--pairs", default="all", metavar="SPEC", help="all, or pairs like 0-1,2-5 (default all)"
    )
    p.add_argument(
        "--trials",
        type=whole,
        default=None,
        metavar="N",
        help="rounds (finished trials) per pair study at most, counted in the database; a "
        "rerun tops up to N. The race stops a pair earlier once more rounds cannot change its "
        f"answer; --strategy fixed runs exactly N (default {per_strategy('trials')})",
    )
    p.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY,
        metavar="|".join(STRATEGIES),
        help=" ".join(f"{s.name}{' (default)' if s.name == DEFAULT_STRATEGY else ''}: {s.help}"
                      for s in STRATEGIES.values()),
    )
    p.add_argument(
        "--min-gain",
        type=float,
        default=MIN_GAIN,
        metavar="PP",
        help=f"recommend a tuned configuration only if it adds at least PP percentage points "
        f"over the default on the fresh seeds, beyond noise (default {MIN_GAIN:g})",
    )
    p.add_argument(
        "--sampler",
        default=None,
        metavar="|".join(SAMPLERS),
        help="Optuna sampler (default " + per_strategy("sampler") + "; the race's sees one "
        "point per configuration at its mean)",
    )
    p.add_argument(
        "--pruner",
        default="quartile",
        metavar="|".join(PRUNERS),
        help="prune on the evaluation points inside the KD round: quartile stops a trial in the "
        "bottom quarter from the second point on (default; median prunes half the good trials, "
        "bench/RESULTS.md)",
    )
    p.add_argument("--seed", type=whole, default=0, help="sampler and trial seed (default 0)")
    p.add_argument(
        "--retries",
        type=whole,
        default=2,
        metavar="R",
        help="extra attempts for a failed trial's configuration (default 2)",
    )
    p.add_argument(
        "--confirm",
        type=whole,
        default=None,
        metavar="K",
        help="once a pair study is done, run its candidates (the race's best, or the fixed "
        "strategy's 3 best) and their default with K fresh seeds each and recommend one "
        f"(default {per_strategy('confirm')}; the race decides on the first 3 where they are "
        "clear; 0: off)",
    )
    p.add_argument(
        "--max-forgetting",
        type=float,
        default=None,
        metavar="P",
        help="recommend only configurations whose confirmed forgetting of the student's own "
        "data is at most P pp (and steer TPE away from the others)",
    )
    p.add_argument(
        "--warm-start",
        choices=("on", "off"),
        default="off",
        help="on: each pair study, after its defaults and 3 sampled trials, tries the 3 "
        "configurations that beat their default by most in the other pairs (default off: it "
        "did not measure better, bench/RESULTS.md)",
    )
    return p


def cmd_tune(argv: Sequence[str], commands: str = "") -> int:
    """A tuning; ``commands`` is the command list its help shows (from tuner.cli.COMMANDS)."""
    a = _tune_parser(commands).parse_args(argv)
    # The library only now: ``--help`` and a bad flag answer without loading it.
    from tuner.read.results import client_rows, pair_rows
    from tuner.run.tuning import tune
    from tuner.store.db import open_storage
    from tuner.views.status import render

    opts = TuneOptions(
        config=a.config,
        storage=a.storage,
        pairs=a.pairs,
        trials=a.trials,
        workers=a.workers,
        devices=a.devices,
        sampler=a.sampler,
        pruner=a.pruner,
        seed=a.seed,
        overrides=a.overrides,
        bundles=a.bundles,
        retries=a.retries,
        confirm=a.confirm,
        max_forgetting=a.max_forgetting,
        strategy=a.strategy,
        min_gain=a.min_gain,
        warm_start=a.warm_start == "on",
        progress=a.progress,
        mode=a.mode,
        clients=a.clients,
        **given(a, WORKER_SETTINGS + HEARTBEAT),
    )
    summary = tune(opts, say=say)
    rate = summary.finished / max(summary.seconds / 60, 1e-9)
    print(
        f"run finished: {summary.finished} trials in {summary.seconds:.1f}s "
        f"({rate:.1f} trials/min, {len(summary.reports)} worker(s))"
    )
    # The answer first, as ``dkd-tune status`` prints it (one renderer for both commands).
    storage = open_storage(opts.storage)
    pairs, clients = ([r for r in rows if r["study"] in summary.studies]
                      for rows in (pair_rows(storage), client_rows(storage)))  # fmt: skip
    print(render(pairs, clients), end="")
    return 0


def cmd_prepare(argv: Sequence[str]) -> int:
    p = parser(
        f"{PROG} prepare",
        "Build the federation bundle (partitions, pre-trained "
        "participants, cached logits) once; later runs load it.",
        f"  {PROG} prepare\n  {PROG} prepare --config cifar10-resnet18 "
        f"--devices cuda:0\n  DKD_TUNE_BUNDLES=/data/bundles {PROG} prepare",
        parents=[config_flag(), OVERRIDES, BUNDLES],
    )
    p.add_argument("--devices", default="auto", help="device to pre-train on (first one used)")
    a = p.parse_args(argv)
    # The library only now: ``--help`` and a bad flag answer without loading it.
    from tuner.run.start import prepare

    opts = TuneOptions(config=a.config, overrides=a.overrides, bundles=a.bundles, devices=a.devices)
    for row in prepare(opts, say=say):
        model = f" {row['model']}," if "model" in row else ""
        print(
            f"participant {row['participant']}:{model} {row['samples']} samples, accuracy "
            f"{row['accuracy']:.2f}% before KD, local accuracy {row['local_accuracy']:.2f}%"
        )
    return 0


def cmd_worker(argv: Sequence[str]) -> int:
    p = parser(
        f"{PROG} worker",
        "Join a run recorded in the storage with more workers (here or on another machine); "
        "serves every phase of the run (a pair run's studies, then their confirmation, as the "
        "process that started it does) and stops when they are done. The studies hold the run's "
        "config, budget and worker settings; the options below replace them for this worker "
        "only. The bundle must be the run's (shared or copied folder): it is checked by "
        "digest, never rebuilt.",
        f"  {PROG} worker --storage postgresql+psycopg://user:pw@db-host/dkd\n"
        f"  {PROG} worker --storage postgresql+psycopg://user:pw@db-host/dkd --devices auto "
        "--workers-per-device 2 --bundles /shared/bundles\n"
        f"  {PROG} worker --federation fashion-mnist-n10 --devices cuda:1 --pairs 0-1,2-5\n"
        f"  {PROG} worker --config fashion-mnist --set data.root=/data/fm --trials 50",
        parents=[
            STORAGE,
            FEDERATION,
            POOL,
            TRIAL_SETTINGS,
            BUNDLES,
            config_flag(
                None,
                "this machine's copy of the run's config (e.g. another data path); it must give "
                "the run's federation hash (default: the config stored in the studies)",
            ),
            OVERRIDES,
        ],
    )
    p.add_argument(
        "--pairs", default=None, metavar="SPEC", help="only these pairs of the run, e.g. 0-1,2-5"
    )
    p.add_argument(
        "--trials",
        type=whole,
        default=None,
        metavar="N",
        help="finished trials per study to top up to (default: the run's)",
    )
    a = p.parse_args(argv)
    # The library only now: ``--help`` and a bad flag answer without loading it.
    from tuner.run.tuning import join_run

    if a.overrides and a.config is None:
        raise UsageError("--set changes --config: pass --config FILE with it")
    existing(a.storage)
    own = given(a, ("config", "pairs", "trials", *WORKER_SETTINGS, *HEARTBEAT))
    opts = TuneOptions(
        storage=a.storage,
        workers=a.workers,
        devices=a.devices,
        bundles=a.bundles,
        progress=a.progress,
        overrides=a.overrides,
        **own,
    )
    summary = join_run(opts, a.federation, say=say, own=tuple(own))
    print(
        f"worker finished: {summary.finished} trials in {summary.seconds:.1f}s "
        f"({len(summary.reports)} worker(s))"
    )
    return 0


def cmd_confirm(argv: Sequence[str]) -> int:
    p = parser(
        f"{PROG} confirm",
        "Re-run each pair's best and default configurations with K fresh seeds and store mean "
        "and std in the study (the report then uses them).",
        f"  {PROG} confirm --repeats 3\n  {PROG} confirm --storage sqlite:///runs/fm.db "
        f"--pairs 0-1,2-5 --devices cuda:0\n  {PROG} confirm --workers 2",
        parents=[
            STORAGE,
            FEDERATION,
            POOL,
            BUNDLES,
            config_flag(
                None,
                "the run's config file on this machine; needed where its participants' models "
                "are code (file.py:Name, module:callable), which is never taken from the storage",
            ),
        ],
    )
    p.add_argument("--repeats", type=whole, default=3, metavar="K", help="seeds (default 3)")
    p.add_argument("--pairs", default="all", metavar="SPEC", help="all (default) or e.g. 0-1,2-5")
    p.add_argument("--force", action="store_true", help="re-run pairs already confirmed")
    a = p.parse_args(argv)
    # The library only now: ``--help`` and a bad flag answer without loading it.
    from tuner.run.confirm import confirm

    existing(a.storage)
    outcomes = confirm(
        a.storage,
        repeats=a.repeats,
        federation=a.federation,
        pairs=a.pairs,
        devices=a.devices,
        bundles=a.bundles,
        force=a.force,
        config=a.config,
        say=say,
        **pool_options(a),
    )
    states = [o.state for o in outcomes]
    print(
        f"confirm finished: {states.count('confirmed')} confirmed, {states.count('skipped')} "
        f"skipped, {states.count('failed')} failed"
    )
    return 1 if "failed" in states else 0


def cmd_compare(argv: Sequence[str]) -> int:
    p = parser(
        f"{PROG} compare",
        "The Molo et al. factorial: every divergence x aggregation at the config's [compare] T "
        "and alpha, k seeds, on an iid and a non-iid federation of two-head clients; stores each "
        "round and prints accuracy (mean +- std) and seconds per round. Reruns add only what is "
        "missing.",
        f"  {PROG} compare --storage sqlite:///runs/compare.db\n"
        f"  {PROG} compare --seeds 5 --partitions iid,dirichlet:0.1,dirichlet:0.5 --workers 2\n"
        f"  {PROG} compare --set compare.temperature=4 --set compare.alpha=0.9 --set name=n3-t4",
        parents=[
            config_flag(
                COMPARE_CONFIG,
                "study config with a two-head model (TOML); default: the shipped "
                f"{Path(COMPARE_CONFIG).stem}",
            ),
            OVERRIDES,
            BUNDLES,
            STORAGE,
            POOL,
        ],
    )
    p.add_argument(
        "--seeds", type=whole, default=None, metavar="K", help="seeds per cell ([compare].seeds)"
    )
    p.add_argument(
        "--partitions",
        default=None,
        metavar="LIST",
        help="federations to compare, e.g. iid,dirichlet:0.5 ([compare].partitions)",
    )
    p.add_argument(
        "--report", default=None, metavar="FILE", help="also write the table and figures as HTML"
    )
    a = p.parse_args(argv)
    # The library only now: ``--help`` and a bad flag answer without loading it.
    from tuner.run.compare import CompareOptions, run_compare
    from tuner.views.report import write_page
    from tuner.views.tables import compare_table

    opts = CompareOptions(
        config=a.config,
        storage=a.storage,
        overrides=a.overrides,
        bundles=a.bundles,
        devices=a.devices,
        seeds=a.seeds,
        partitions=a.partitions,
        **pool_options(a),
    )
    print(compare_table(run_compare(opts, say=say)), end="")
    if a.report:
        write_page(a.storage, a.report)
        print(f"wrote {a.report}")
    return 0
