"""``dkd-tune dashboard``: optuna-dashboard over the run's storage, on localhost by default.

optuna-dashboard's own WSGI app, served by a threaded wsgiref server (the one its CLI uses) that
we bind ourselves, so ``--port 0`` takes a free port and the real address is printed before
serving. Plain ``optuna-dashboard sqlite:///dkd-tune.db`` shows the same studies and notes.
"""

from __future__ import annotations

import socketserver
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .errors import UsageError
from .storage import get_storage, mask

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    """The dashboard's page fetches several API routes at once: one thread per request."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request on the terminal."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def make_dashboard(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> WSGIServer:
    """A bound, not yet serving, dashboard server for the storage ``url``."""
    import optuna_dashboard  # heavy (bottle and its app): only for this command

    app = optuna_dashboard.wsgi(get_storage(url))
    try:
        return make_server(host, port, app, _ThreadedServer, _QuietHandler)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --port "
            "(0 takes a free one) or --host"
        ) from None


def serve(url: str, host: str, port: int, say: Callable[[str], None] = print) -> None:
    """Serve until interrupted; the first line printed is the address to open."""
    server = make_dashboard(url, host, port)
    shown = f"[{host}]" if ":" in host else host
    say(
        f"optuna-dashboard for {mask(url)} on http://{shown}:{server.server_port}/dashboard "
        "(Ctrl-C to stop)"
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
