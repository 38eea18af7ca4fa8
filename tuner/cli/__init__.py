"""The ``dkd-tune`` command: a table of small commands over the tuner's library calls.

``dkd-tune [options]`` runs a tuning; the subcommands are the keys of :data:`COMMANDS`, and the
help lists them from there. Any error a user can fix (a DkdError, or a bad flag) is one line on
stderr and exit code 2, with no traceback; a run that ends with studies it gave up on, or whose
database went away, exits 1; Ctrl-C exits 130.

Rooms here: ``flags`` (parsers and the shared flags, declared once), ``commands_run`` (commands
that run trials), ``commands_read`` (commands that read a stored run), ``common``.

May import: every room of tuner (the CLI is the top of the package).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from objectives import DkdError
from tuner.errors import RunError
from tuner.views.terminal import printable
from tuner.worker import interrupts

from .commands_read import cmd_dashboard, cmd_export, cmd_report, cmd_status
from .commands_run import cmd_compare, cmd_confirm, cmd_prepare, cmd_tune, cmd_worker
from .flags import PROG

#: Every subcommand by name, with the one line the top-level help shows for it.
COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "prepare": (cmd_prepare, "build the federation bundle once"),
    "status": (cmd_status, "trials and best per pair"),
    "export": (cmd_export, "the configuration to use per pair (json, csv)"),
    "worker": (cmd_worker, "join a stored run with more workers"),
    "compare": (cmd_compare, "the divergence x aggregation factorial"),
    "report": (cmd_report, "one HTML page of every pair against the default"),
    "confirm": (cmd_confirm, "re-run best and default on fresh seeds"),
    "dashboard": (cmd_dashboard, "optuna-dashboard on the storage, read-only"),
}


def _command_lines() -> str:
    return "".join(f"  {name:<10} {line}\n" for name, (_, line) in COMMANDS.items())


def main(argv: Sequence[str] | None = None) -> int:
    interrupts.install()  # a Ctrl-C swallowed by a GC callback is raised later, not printed
    args = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS[args[0]][0] if args and args[0] in COMMANDS else None
    try:
        return command(args[1:]) if command else cmd_tune(args, _command_lines())
    # An error line may name studies read from the storage: control characters escaped.
    except RunError as exc:
        print(f"{PROG}: {printable(exc)}", file=sys.stderr)
        return 1
    except DkdError as exc:
        print(f"{PROG}: error: {printable(exc)}", file=sys.stderr)
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


__all__ = ["COMMANDS", "PROG", "entry", "main"]
