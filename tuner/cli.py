"""The ``dkd-tune`` command: a table of small commands over the tuner's library calls.

``dkd-tune [options]`` runs a tuning; ``prepare``, ``status``, ``export``, ``worker``,
``report``, ``confirm``, ``compare`` and ``dashboard`` are subcommands. Any error a user can fix
(a DkdError, or a bad flag) is one line on stderr and exit code 2, with no traceback; a run that
ends with studies it gave up on, or whose database went away, exits 1.

Each command imports the library it calls inside its own function: for start-up time only
(``dkd-tune --help`` and ``status`` need neither torch's trial code nor plotly).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from objectives import DkdError
from objectives.config import shipped_configs

from . import interrupts
from .errors import RunError, UsageError
from .heartbeat import HEARTBEAT_GRACE_S, HEARTBEAT_INTERVAL_S
from .options import COMPARE_CONFIG, DEFAULT_CONFIG, PRUNERS, SAMPLERS, TuneOptions
from .storage import DEFAULT_STORAGE

PROG = "dkd-tune"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (argparse prints the usage block first by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser(prog: str, description: str, examples: str) -> _Parser:
    return _Parser(
        prog=prog,
        description=description,
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help="study config (TOML), relative to the working directory, or a shipped one by name "
        f"({', '.join(shipped_configs())}); default: the shipped {Path(DEFAULT_CONFIG).stem}",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set kd.lr=0.02 (repeatable)",
    )
    p.add_argument(
        "--bundles",
        default=None,
        metavar="DIR",
        help="folder of federation bundles (default $DKD_TUNE_BUNDLES or ./bundles)",
    )


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        metavar="URL",
        help=f"SQLAlchemy URL of the study database; default {DEFAULT_STORAGE}",
    )


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def _add_pool(p: argparse.ArgumentParser) -> None:
    """The worker-pool options every command that runs trials takes."""
    p.add_argument(
        "--workers",
        type=_whole,
        default=None,
        metavar="N",
        help="worker processes, taking the devices in turn (default: one per device)",
    )
    p.add_argument(
        "--workers-per-device",
        type=_whole,
        default=None,
        metavar="K",
        help="K worker processes on every device instead of --workers (default 1)",
    )
    p.add_argument(
        "--devices",
        default="auto",
        metavar="LIST",
        help="auto (every visible GPU, else the CPU) | cpu | cuda:0,cuda:1 (default auto)",
    )
    p.add_argument(
        "--progress",
        default="auto",
        choices=("auto", "live", "log", "quiet"),
        help="live line on a terminal, log lines otherwise (default auto)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=_seconds,
        default=None,
        metavar="S",
        help=f"seconds between a worker's heartbeats (default {HEARTBEAT_INTERVAL_S:g})",
    )
    p.add_argument(
        "--heartbeat-grace",
        type=_seconds,
        default=None,
        metavar="S",
        help="a trial whose worker is silent this long is failed and retried "
        f"(default {HEARTBEAT_GRACE_S:g})",
    )


def _add_workers(p: argparse.ArgumentParser) -> None:
    """The pool's options and the pair trials' own (precision, trials at once)."""
    _add_pool(p)
    p.add_argument(
        "--precision",
        default=None,
        metavar="fp32|bf16",
        help="bf16: autocast the KD steps to bfloat16 (GPUs; default fp32)",
    )
    p.add_argument(
        "--batch-trials",
        type=_whole,
        default=None,
        metavar="K",
        help="each worker trains K trials' students at once (fills a GPU; default 1)",
    )


#: Worker options whose CLI default is None, so that a joining worker can tell "not given".
_WORKER_SETTINGS = ("workers_per_device", "precision", "batch_trials")
_HEARTBEAT = ("heartbeat_interval", "heartbeat_grace")


def _given(a: argparse.Namespace, names: Sequence[str]) -> dict:
    return {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}


def _pool_options(a: argparse.Namespace) -> dict:
    """The pool options of compare and confirm, as given."""
    return {"progress": a.progress, "workers": a.workers,
            **_given(a, ("workers_per_device", *_HEARTBEAT))}  # fmt: skip


def _tune_parser() -> _Parser:
    p = _parser(
        PROG,
        "Tune one-round KD between federation participants: one Optuna study per pair, every "
        "trial stored in the database.\n\ncommands: " + ", ".join(COMMANDS) +
        f" (see {PROG} COMMAND --help); without a command, run a tuning.",
        f"  {PROG} --pairs all --trials 200\n"
        f"  {PROG} --pairs 0-1,2-5 --trials 30 --workers 2 --pruner hyperband\n"
        f"  {PROG} --config cifar10-resnet18 --devices cuda:0,cuda:1 --workers 4 \\\n"
        "      --storage postgresql+psycopg://user:pw@db-host/dkd\n"
        f"  {PROG} --set kd.lr=0.02 --set name=fashion-mnist-lr02 --trials 50\n"
        f"  {PROG} --mode neighbourhood --config fashion-mnist-n3 --trials 30",
    )
    _add_config(p)
    _add_storage(p)
    p.add_argument(
        "--mode",
        default="pair",
        metavar="pair|neighbourhood",
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
        type=_whole,
        default=20,
        metavar="N",
        help="finished trials per pair study in total, counted in the database "
        "(a rerun tops up to N; default 20)",
    )
    _add_workers(p)
    p.add_argument(
        "--sampler", default="tpe", metavar="|".join(SAMPLERS), help="Optuna sampler (default tpe)"
    )
    p.add_argument(
        "--pruner",
        default="quartile",
        metavar="|".join(PRUNERS),
        help="prune on the evaluation points inside the KD round: quartile stops a trial in the "
        "bottom quarter from the second point on (default; median prunes half the good trials, "
        "bench/RESULTS.md)",
    )
    p.add_argument("--seed", type=_whole, default=0, help="sampler and trial seed (default 0)")
    p.add_argument(
        "--retries",
        type=_whole,
        default=2,
        metavar="R",
        help="extra attempts for a failed trial's configuration (default 2)",
    )
    p.add_argument(
        "--confirm",
        type=_whole,
        default=3,
        metavar="K",
        help="once a pair study has its trials, re-run its 3 best configurations and the "
        "default with K fresh seeds and recommend one (default 3; 0: off)",
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


def cmd_tune(argv: Sequence[str]) -> int:
    from .db import open_storage
    from .results import client_rows, pair_rows
    from .tables import client_status_table, status_table
    from .tuning import tune

    a = _tune_parser().parse_args(argv)
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
        warm_start=a.warm_start == "on",
        progress=a.progress,
        mode=a.mode,
        clients=a.clients,
        **_given(a, _WORKER_SETTINGS + _HEARTBEAT),
    )
    summary = tune(opts, say=_say)
    rate = summary.finished / max(summary.seconds / 60, 1e-9)
    print(
        f"run finished: {summary.finished} trials in {summary.seconds:.1f}s "
        f"({rate:.1f} trials/min, {len(summary.reports)} worker(s))"
    )
    storage = open_storage(opts.storage)
    if opts.mode == "neighbourhood":
        clients = client_rows(storage)
        print(client_status_table([r for r in clients if r["study"] in summary.studies]), end="")
        return 0
    rows = [r for r in pair_rows(storage) if r["study"] in summary.studies]
    print(status_table(rows), end="")
    return 0


def cmd_prepare(argv: Sequence[str]) -> int:
    from .run import prepare

    p = _parser(
        f"{PROG} prepare",
        "Build the federation bundle (partitions, pre-trained "
        "participants, cached logits) once; later runs load it.",
        f"  {PROG} prepare\n  {PROG} prepare --config cifar10-resnet18 "
        f"--devices cuda:0\n  DKD_TUNE_BUNDLES=/data/bundles {PROG} prepare",
    )
    _add_config(p)
    p.add_argument("--devices", default="auto", help="device to pre-train on (first one used)")
    a = p.parse_args(argv)
    opts = TuneOptions(config=a.config, overrides=a.overrides, bundles=a.bundles, devices=a.devices)
    for row in prepare(opts, say=_say):
        model = f" {row['model']}," if "model" in row else ""
        print(
            f"participant {row['participant']}:{model} {row['samples']} samples, accuracy "
            f"{row['accuracy']:.2f}% before KD, local accuracy {row['local_accuracy']:.2f}%"
        )
    return 0


def _federation_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--federation",
        default=None,
        metavar="NAME",
        help="only this federation's studies (default: all in the storage)",
    )


def cmd_status(argv: Sequence[str]) -> int:
    from .results import client_rows, pair_rows
    from .tables import client_status_table, status_table

    p = _parser(
        f"{PROG} status",
        "Per pair: finished/running/failed/pruned trials, best gain, "
        "default gain and the best configuration.",
        f"  {PROG} status\n  {PROG} status --storage sqlite:///runs/fm.db "
        "--federation fashion-mnist-n10",
    )
    _add_storage(p)
    _federation_arg(p)
    a = p.parse_args(argv)
    storage = _existing_storage(a.storage)
    pairs, clients = pair_rows(storage, a.federation), client_rows(storage, a.federation)
    if pairs or not clients:
        print(status_table(pairs), end="")
    print(client_status_table(clients), end="")
    return 0


def cmd_export(argv: Sequence[str]) -> int:
    from .export import FORMATS, render
    from .results import client_rows, pair_rows

    p = _parser(
        f"{PROG} export",
        "Export the best configuration per pair with its gain, the "
        "default's gain and the improvement.",
        f"  {PROG} export --format csv --out best.csv\n  {PROG} export --format json "
        "| jq '.[] | {pair, improvement}'",
    )
    _add_storage(p)
    _federation_arg(p)
    p.add_argument("--format", default="json", choices=FORMATS, help="json (default) or csv")
    p.add_argument("--out", default="-", metavar="FILE", help="output file (default stdout)")
    a = p.parse_args(argv)
    storage = _existing_storage(a.storage)
    text = render(pair_rows(storage, a.federation) + client_rows(storage, a.federation), a.format)
    if a.out == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(a.out).write_text(text)
        except OSError as exc:
            raise UsageError(
                f"cannot write --out {a.out} ({exc.strerror}): pick a writable path"
            ) from None
        print(f"wrote {a.out}", file=sys.stderr)
    return 0


def cmd_worker(argv: Sequence[str]) -> int:
    from .tuning import join_run

    p = _parser(
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
    )
    _add_storage(p)
    _federation_arg(p)
    _add_workers(p)
    p.add_argument("--bundles", default=None, metavar="DIR", help="folder of federation bundles")
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="this machine's copy of the run's config (e.g. another data path); it must give "
        "the run's federation hash (default: the config stored in the studies)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of --config (repeatable)",
    )
    p.add_argument(
        "--pairs", default=None, metavar="SPEC", help="only these pairs of the run, e.g. 0-1,2-5"
    )
    p.add_argument(
        "--trials",
        type=_whole,
        default=None,
        metavar="N",
        help="finished trials per study to top up to (default: the run's)",
    )
    a = p.parse_args(argv)
    if a.overrides and a.config is None:
        raise UsageError("--set changes --config: pass --config FILE with it")
    _existing(a.storage)
    given = _given(a, ("config", "pairs", "trials", *_WORKER_SETTINGS, *_HEARTBEAT))
    opts = TuneOptions(
        storage=a.storage,
        workers=a.workers,
        devices=a.devices,
        bundles=a.bundles,
        progress=a.progress,
        overrides=a.overrides,
        **given,
    )
    summary = join_run(opts, a.federation, say=_say, own=tuple(given))
    print(
        f"worker finished: {summary.finished} trials in {summary.seconds:.1f}s "
        f"({len(summary.reports)} worker(s))"
    )
    return 0


def cmd_report(argv: Sequence[str]) -> int:
    from .report import DEFAULT_OUT, summary_lines, write_report

    p = _parser(
        f"{PROG} report",
        "Write one self-contained HTML page comparing every pair's best configuration with the "
        "T=1, alpha=0.5 default (heatmaps, ratios, distributions, importances, forgetting).",
        f"  {PROG} report\n  {PROG} report --storage sqlite:///runs/fm.db --out fm-report.html",
    )
    _add_storage(p)
    _federation_arg(p)
    p.add_argument("--out", default=DEFAULT_OUT, metavar="FILE", help=f"default {DEFAULT_OUT}")
    a = p.parse_args(argv)
    _existing_storage(a.storage)
    data = write_report(a.storage, a.out, a.federation)
    print(f"wrote {a.out}")
    print("\n".join(summary_lines(data)))
    return 0


def cmd_confirm(argv: Sequence[str]) -> int:
    from .confirm import confirm

    p = _parser(
        f"{PROG} confirm",
        "Re-run each pair's best and default configurations with K fresh seeds and store mean "
        "and std in the study (the report then uses them).",
        f"  {PROG} confirm --repeats 3\n  {PROG} confirm --storage sqlite:///runs/fm.db "
        f"--pairs 0-1,2-5 --devices cuda:0\n  {PROG} confirm --workers 2",
    )
    _add_storage(p)
    _federation_arg(p)
    p.add_argument("--repeats", type=_whole, default=3, metavar="K", help="seeds (default 3)")
    p.add_argument("--pairs", default="all", metavar="SPEC", help="all (default) or e.g. 0-1,2-5")
    _add_pool(p)
    p.add_argument("--bundles", default=None, metavar="DIR", help="folder of federation bundles")
    p.add_argument("--force", action="store_true", help="re-run pairs already confirmed")
    a = p.parse_args(argv)
    _existing(a.storage)
    outcomes = confirm(
        a.storage,
        repeats=a.repeats,
        federation=a.federation,
        pairs=a.pairs,
        devices=a.devices,
        bundles=a.bundles,
        force=a.force,
        say=_say,
        **_pool_options(a),
    )
    states = [o.state for o in outcomes]
    print(
        f"confirm finished: {states.count('confirmed')} confirmed, {states.count('skipped')} "
        f"skipped, {states.count('failed')} failed"
    )
    return 1 if "failed" in states else 0


def cmd_dashboard(argv: Sequence[str]) -> int:
    from .dashboard import DEFAULT_HOST, DEFAULT_PORT, check_edits, serve

    p = _parser(
        f"{PROG} dashboard",
        "Serve optuna-dashboard on the storage: every pair study, its trials and its note. "
        "Read-only: every write (deleting a study, editing a note) is refused unless "
        "--allow-edits, which only a loopback host takes. On a cluster, keep the default host "
        "and tunnel: ssh -L 8080:127.0.0.1:8080 NODE, then open http://127.0.0.1:8080/dashboard.",
        f"  {PROG} dashboard\n  {PROG} dashboard --storage sqlite:///runs/fm.db --port 0\n"
        f"  {PROG} dashboard --allow-edits   # notes editable, on 127.0.0.1 only",
    )
    _add_storage(p)
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument(
        "--port",
        type=_whole,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 takes a free one)",
    )
    p.add_argument(
        "--allow-edits",
        action="store_true",
        help="let the browser change the storage (notes, deleting studies, telling trials); "
        "only on a loopback --host. Default: read-only, every write refused",
    )
    a = p.parse_args(argv)
    if not 0 <= a.port <= 65535:
        raise UsageError(f"--port {a.port} is not a port: use 0..65535")
    check_edits(a.host, a.allow_edits)
    _existing_storage(a.storage)
    try:
        serve(a.storage, a.host, a.port, say=_say, allow_edits=a.allow_edits)
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    return 0


def cmd_compare(argv: Sequence[str]) -> int:
    from .compare import CompareOptions, run_compare
    from .report import write_page
    from .tables import compare_table

    p = _parser(
        f"{PROG} compare",
        "The Molo et al. factorial: every divergence x aggregation at the config's [compare] T "
        "and alpha, k seeds, on an iid and a non-iid federation of two-head clients; stores each "
        "round and prints accuracy (mean +- std) and seconds per round. Reruns add only what is "
        "missing.",
        f"  {PROG} compare --storage sqlite:///runs/compare.db\n"
        f"  {PROG} compare --seeds 5 --partitions iid,dirichlet:0.1,dirichlet:0.5 --workers 2\n"
        f"  {PROG} compare --set compare.temperature=4 --set compare.alpha=0.9 --set name=n3-t4",
    )
    _add_config(p)
    for action in p._actions:  # the two-head default, and a --help that says so
        if action.dest == "config":
            action.default = COMPARE_CONFIG
            action.help = (
                "study config with a two-head model (TOML); default: the shipped "
                f"{Path(COMPARE_CONFIG).stem}"
            )
    _add_storage(p)
    p.add_argument(
        "--seeds", type=_whole, default=None, metavar="K", help="seeds per cell ([compare].seeds)"
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
    _add_pool(p)
    a = p.parse_args(argv)
    opts = CompareOptions(
        config=a.config,
        storage=a.storage,
        overrides=a.overrides,
        bundles=a.bundles,
        devices=a.devices,
        seeds=a.seeds,
        partitions=a.partitions,
        **_pool_options(a),
    )
    print(compare_table(run_compare(opts, say=_say)), end="")
    if a.report:
        write_page(a.storage, a.report)
        print(f"wrote {a.report}")
    return 0


def _existing(url: str) -> None:
    """Read-only commands must not create an empty database where the user mistyped a path."""
    from .storage import sqlite_path

    try:
        path = sqlite_path(url)
    except Exception:
        return  # check_storage gives the one-line message
    if path is not None and not path.exists():
        raise UsageError(f"no database at {path}: run {PROG} first or pass --storage")


def _existing_storage(url: str):
    """The storage of a read-only command: it must exist already and answer."""
    from .db import open_storage
    from .storage import check_storage

    _existing(url)
    check_storage(url)
    return open_storage(url)


def _say(message: str) -> None:
    print(message, flush=True)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "prepare": cmd_prepare,
    "status": cmd_status,
    "export": cmd_export,
    "worker": cmd_worker,
    "compare": cmd_compare,
    "report": cmd_report,
    "confirm": cmd_confirm,
    "dashboard": cmd_dashboard,
}


def main(argv: Sequence[str] | None = None) -> int:
    interrupts.install()  # a Ctrl-C swallowed by a GC callback is raised later, not printed
    args = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(args[0]) if args else None
    try:
        return command(args[1:]) if command else cmd_tune(args)
    except RunError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except DkdError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script: :func:`main`, then exit. After Ctrl-C (exit 130) every trial is
    closed already, but a daemon thread (the in-process worker or the heartbeat) may still be
    inside torch or a database call, and finalising the interpreter under it aborts the process
    (SIGABRT instead of 130): exit at once instead."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
