"""The CLI's parsers: one-line errors, help with examples, and every shared flag declared once in
a parent parser (as optuna's CLI shares its common options) that commands list in ``parents``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from objectives.config import shipped_configs
from tuner.errors import UsageError
from tuner.options import (
    DEFAULT_CONFIG,
    DEFAULT_STORAGE,
    HEARTBEAT_GRACE_S,
    HEARTBEAT_INTERVAL_S,
)

PROG = "dkd-tune"


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (argparse prints the usage block first by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def parser(
    prog: str, description: str, examples: str, parents: Sequence[argparse.ArgumentParser] = ()
) -> Parser:
    """A command's parser: its description, the shared flags of ``parents``, its examples."""
    return Parser(
        prog=prog,
        description=description,
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def config_flag(
    default: str | None = DEFAULT_CONFIG, help: str | None = None
) -> argparse.ArgumentParser:
    """``--config``: its default differs by command (the embedded default, compare's two-head
    federation, or a joining worker's "the run's"), so it is a parent made per command."""
    p = _parent()
    p.add_argument(
        "--config",
        default=default,
        metavar="FILE",
        help=help
        or "study config (TOML), relative to the working directory, or a shipped one by name "
        f"({', '.join(shipped_configs())}); default: the shipped {Path(str(default)).stem}",
    )
    return p


#: ``--set KEY=VALUE``: a config override (tuning, prepare, compare, a joining worker).
OVERRIDES = _parent()
OVERRIDES.add_argument(
    "--set",
    dest="overrides",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="override a field of --config, e.g. --set kd.lr=0.02 (repeatable)",
)

#: ``--bundles DIR``: where federation bundles live.
BUNDLES = _parent()
BUNDLES.add_argument(
    "--bundles",
    default=None,
    metavar="DIR",
    help="folder of federation bundles (default $DKD_TUNE_BUNDLES or ./bundles)",
)

#: ``--storage URL``: the study database.
STORAGE = _parent()
STORAGE.add_argument(
    "--storage",
    default=DEFAULT_STORAGE,
    metavar="URL",
    help=f"SQLAlchemy URL of the study database; default {DEFAULT_STORAGE}",
)

#: ``--federation NAME``: narrow a command to one federation's studies.
FEDERATION = _parent()
FEDERATION.add_argument(
    "--federation",
    default=None,
    metavar="NAME",
    help="only this federation's studies: its name, or its federation hash where a storage "
    "holds one name under two (default: all in the storage)",
)

#: The worker-pool flags of every command that runs trials.
POOL = _parent()
POOL.add_argument(
    "--workers",
    type=whole,
    default=None,
    metavar="N",
    help="worker processes, taking the devices in turn (default: one per device)",
)
POOL.add_argument(
    "--workers-per-device",
    type=whole,
    default=None,
    metavar="K",
    help="K worker processes on every device instead of --workers (default 1)",
)
POOL.add_argument(
    "--devices",
    default="auto",
    metavar="LIST",
    help="auto (every visible GPU, else the CPU) | cpu | cuda:0,cuda:1 (default auto)",
)
POOL.add_argument(
    "--progress",
    default="auto",
    choices=("auto", "live", "log", "quiet"),
    help="live line on a terminal, log lines otherwise (default auto)",
)
POOL.add_argument(
    "--heartbeat-interval",
    type=_seconds,
    default=None,
    metavar="S",
    help=f"seconds between a worker's heartbeats (default {HEARTBEAT_INTERVAL_S:g})",
)
POOL.add_argument(
    "--heartbeat-grace",
    type=_seconds,
    default=None,
    metavar="S",
    help="a trial whose worker is silent this long is failed and retried "
    f"(default {HEARTBEAT_GRACE_S:g})",
)

#: How pair trials run on a worker (tuning and a joining worker).
TRIAL_SETTINGS = _parent()
TRIAL_SETTINGS.add_argument(
    "--precision",
    default=None,
    metavar="fp32|bf16",
    help="bf16: autocast the KD steps to bfloat16 (GPUs; default fp32)",
)
TRIAL_SETTINGS.add_argument(
    "--batch-trials",
    type=whole,
    default=None,
    metavar="K",
    help="each worker trains K trials' students at once (fills a GPU; default 1)",
)

#: Worker options whose CLI default is None, so that a joining worker can tell "not given".
WORKER_SETTINGS = ("workers_per_device", "precision", "batch_trials")
HEARTBEAT = ("heartbeat_interval", "heartbeat_grace")


def given(a: argparse.Namespace, names: Sequence[str]) -> dict:
    """The options among ``names`` the user gave (those left at None are not in the dict)."""
    return {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}


def pool_options(a: argparse.Namespace) -> dict:
    """The pool options of compare and confirm, as given."""
    return {"progress": a.progress, "workers": a.workers,
            **given(a, ("workers_per_device", *HEARTBEAT))}  # fmt: skip
