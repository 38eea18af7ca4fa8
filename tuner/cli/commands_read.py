"""The commands that read a stored run: ``status``, ``export``, ``report``, ``dashboard``. None
creates a database: each refuses a storage that does not exist."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from tuner.errors import UsageError

from .common import existing_storage, say
from .flags import FEDERATION, PROG, STORAGE, parser, whole


def cmd_status(argv: Sequence[str]) -> int:
    p = parser(
        f"{PROG} status",
        "The answer first: per pair what to use (the recommended configuration or the default), "
        "its confirmed difference with its interval and seeds, and where the pair stands; "
        "--wide: the single-trial table; --format json: the rows export gives.",
        f"  {PROG} status\n  {PROG} status --storage sqlite:///runs/fm.db "
        f"--federation fashion-mnist-n10\n  {PROG} status --format json | jq '.[].pair'",
        parents=[STORAGE, FEDERATION],
    )
    p.add_argument("--wide", action="store_true", help="the single-trial table of every pair")
    p.add_argument("--format", default="text", choices=("text", "json"),
                   help="text (default) or json: the same rows as export, for scripts")  # fmt: skip
    a = p.parse_args(argv)
    # The library only now: ``--help`` and a bad flag answer without loading it.
    from tuner.read.results import client_rows, pair_rows
    from tuner.views.status import render

    storage = existing_storage(a.storage)
    pairs, clients = pair_rows(storage, a.federation), client_rows(storage, a.federation)
    if a.format == "json":
        from tuner.views.export import render

        print(render(pairs + clients, "json"), end="")
        return 0
    print(render(pairs, clients, wide=a.wide), end="")
    return 0


def cmd_export(argv: Sequence[str]) -> int:
    from tuner.views.export import FORMATS, render

    p = parser(
        f"{PROG} export",
        "Export the best configuration per pair with its gain, the "
        "default's gain and the improvement.",
        f"  {PROG} export --format csv --out best.csv\n  {PROG} export --format json "
        "| jq '.[] | {pair, improvement}'",
        parents=[STORAGE, FEDERATION],
    )
    p.add_argument("--format", default="json", choices=FORMATS, help="json (default) or csv")
    p.add_argument("--out", default="-", metavar="FILE", help="output file (default stdout)")
    a = p.parse_args(argv)
    # The library only now: ``--help`` and a bad flag answer without loading it.
    from tuner.read.results import client_rows, pair_rows
    from tuner.views.export import write_atomic

    storage = existing_storage(a.storage)
    text = render(pair_rows(storage, a.federation) + client_rows(storage, a.federation), a.format)
    if a.out == "-":
        sys.stdout.write(text)
    else:
        try:
            write_atomic(Path(a.out).resolve(), text)
        except OSError as exc:
            raise UsageError(
                f"cannot write --out {a.out} ({exc.strerror}): pick a writable path"
            ) from None
        print(f"wrote {a.out}", file=sys.stderr)
    return 0


def cmd_report(argv: Sequence[str]) -> int:
    from tuner.views.report import DEFAULT_OUT, summary_lines, write_report
    from tuner.views.terminal import printable

    p = parser(
        f"{PROG} report",
        "Write one self-contained HTML page comparing every pair's best configuration with the "
        "T=1, alpha=0.5 default (heatmaps, ratios, distributions, importances, forgetting).",
        f"  {PROG} report\n  {PROG} report --storage sqlite:///runs/fm.db --out fm-report.html",
        parents=[STORAGE, FEDERATION],
    )
    p.add_argument("--out", default=DEFAULT_OUT, metavar="FILE", help=f"default {DEFAULT_OUT}")
    a = p.parse_args(argv)

    existing_storage(a.storage)
    data = write_report(a.storage, a.out, a.federation)
    print(f"wrote {a.out}")
    print("\n".join(map(printable, summary_lines(data))))
    return 0


def cmd_dashboard(argv: Sequence[str]) -> int:
    from tuner.views.dashboard import (
        DEFAULT_HOST,
        DEFAULT_PORT,
        check_edits,
        check_host,
        serve,
    )

    p = parser(
        f"{PROG} dashboard",
        "Serve optuna-dashboard on the storage: every pair study, its trials and its note. "
        "Read-only: every write (deleting a study, editing a note) is refused unless "
        "--allow-edits, which only a loopback host takes. On a cluster, keep the default host "
        "and tunnel: ssh -L 8080:127.0.0.1:8080 NODE, then open http://127.0.0.1:8080/dashboard.",
        f"  {PROG} dashboard\n  {PROG} dashboard --storage sqlite:///runs/fm.db --port 0\n"
        f"  {PROG} dashboard --allow-edits   # notes editable, on 127.0.0.1 only",
        parents=[STORAGE],
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}; ::1 for IPv6 loopback)",
    )
    p.add_argument(
        "--port",
        type=whole,
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
    check_host(a.host)
    check_edits(a.host, a.allow_edits)
    existing_storage(a.storage, read_only=not a.allow_edits, live=True)
    try:
        serve(a.storage, a.host, a.port, say=say, allow_edits=a.allow_edits)
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    return 0
