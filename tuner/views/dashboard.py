"""``dkd-tune dashboard``: optuna-dashboard over the run's storage, on localhost by default.

optuna-dashboard's own WSGI app, served by a threaded wsgiref server (the one its CLI uses) that
we bind ourselves, so ``--port 0`` takes a free port and the real address is printed before
serving. Plain ``optuna-dashboard sqlite:///dkd-tune.db`` shows the same studies and notes.

Read-only unless asked: optuna-dashboard's API can delete and create studies, tell trials and
rewrite notes, unauthenticated, and what a run stored is what users take home. Every request but
GET and HEAD is refused (403) before it reaches the app, unless ``--allow-edits``, which is only
accepted on a loopback host (so a cluster's dashboard on 0.0.0.0 can never be written to; reach it
through an SSH tunnel to the loopback port instead).
"""

from __future__ import annotations

import ipaddress
import json
import socketserver
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuner.errors import UsageError
from tuner.store.storage import get_storage, mask

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    """The dashboard's page fetches several API routes at once: one thread per request."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request on the terminal."""

    def log_message(self, format: str, *args: object) -> None:
        pass


#: The HTTP methods that only read (every write route of optuna-dashboard is POST, PUT or DELETE).
READ_METHODS = frozenset({"GET", "HEAD"})
REFUSED = (
    "dkd-tune dashboard is read-only: results are not changed from the browser "
    "(restart it with --allow-edits on a loopback host to edit notes or studies)"
)


def read_only(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI ``app`` with every request but GET and HEAD answered 403, never passed on."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        body = json.dumps({"reason": REFUSED}).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return guarded


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_edits(host: str, allow_edits: bool) -> None:
    """Refuse ``--allow-edits`` on a host others can reach."""
    if allow_edits and not is_loopback(host):
        raise UsageError(
            f"--allow-edits is only for a loopback host, not {host}: drop it, or serve on "
            "127.0.0.1 and reach it through an SSH tunnel (ssh -L 8080:127.0.0.1:8080 HOST)"
        )


def make_dashboard(
    url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, allow_edits: bool = False
) -> WSGIServer:
    """A bound, not yet serving, dashboard server for the storage ``url`` (read-only unless
    ``allow_edits``, which needs a loopback ``host``)."""
    check_edits(host, allow_edits)
    import optuna_dashboard  # heavy (bottle and its app): only for this command

    app = optuna_dashboard.wsgi(get_storage(url, read_only=not allow_edits))
    if not allow_edits:
        app = read_only(app)
    try:
        return make_server(host, port, app, _ThreadedServer, _QuietHandler)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --port "
            "(0 takes a free one) or --host"
        ) from None


def serve(
    url: str,
    host: str,
    port: int,
    say: Callable[[str], None] = print,
    *,
    allow_edits: bool = False,
) -> None:
    """Serve until interrupted; the first line printed is the address to open and whether the
    dashboard may change the storage."""
    server = make_dashboard(url, host, port, allow_edits=allow_edits)
    shown = f"[{host}]" if ":" in host else host
    mode = "EDITS ALLOWED" if allow_edits else "read-only"
    say(
        f"optuna-dashboard for {mask(url)} on http://{shown}:{server.server_port}/dashboard "
        f"({mode}; Ctrl-C to stop)"
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
