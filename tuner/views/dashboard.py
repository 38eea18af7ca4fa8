"""``dkd-tune dashboard``: optuna-dashboard over the run's storage, on localhost by default.

optuna-dashboard's own WSGI app, served by a threaded wsgiref server (the one its CLI uses) that
we bind ourselves, so ``--port 0`` takes a free port and the real address is printed before
serving. Plain ``optuna-dashboard sqlite:///dkd-tune.db`` shows the same studies and notes.

Read-only unless asked: optuna-dashboard's API can delete and create studies, tell trials and
rewrite notes, unauthenticated, and what a run stored is what users take home. Every request but
GET and HEAD is refused (403) before it reaches the app, unless ``--allow-edits``, which is only
accepted on a loopback host (so a cluster's dashboard on 0.0.0.0 can never be written to; reach it
through an SSH tunnel to the loopback port instead).

In both modes a request is answered only when its Host header names the server itself (the bound
address and port, or a loopback name when bound to loopback): a page on another site whose name
is re-pointed at 127.0.0.1 (DNS rebinding) still sends its own name as Host and gets 403. With
``--allow-edits`` a write whose Origin (or, without one, Referer) is another site's is refused
too, so a cross-site form or fetch cannot edit.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import socketserver
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuner.errors import UsageError
from tuner.store.storage import get_storage, mask

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    """The dashboard's page fetches several API routes at once: one thread per request."""

    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    """The same on an IPv6 address (``--host ::1``): socketserver's default family is IPv4 only."""

    address_family = socket.AF_INET6


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


WRONG_HOST = (
    "dkd-tune dashboard answers only requests addressed to itself (the Host header must be the "
    "address it listens on): open the address it printed"
)
FOREIGN_ORIGIN = (
    "dkd-tune dashboard refuses writes sent from another site (Origin or Referer is not this "
    "dashboard): edit from the dashboard's own page"
)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: Loopback names and the address each is bound as, never resolved: a resolver or hosts file
#: that maps ``localhost`` elsewhere would put a dashboard meant for this machine (and its
#: --allow-edits) on an interface others reach.
LOOPBACK_BIND = {"localhost": "127.0.0.1", "localhost.": "127.0.0.1"}
#: Addresses that bind every interface: the Host a browser sends is then one of the machine's.
ANY_ADDRESS = ("0.0.0.0", "::")


def _forbidden(reason: str, start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps({"reason": reason}).encode()
    start_response(
        "403 Forbidden",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def url_host(host: str) -> str:
    """``host`` as it appears in a URL or a Host header: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def own_hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values (lower case, with port) that address a server bound to ``host``:
    the bound address, plus every loopback name when it is loopback, plus on a wildcard bind the
    machine's names and any IP literal (checked in :func:`host_allowed`); ``localhost`` only on
    a loopback bind."""
    names = {url_host(host.lower())}
    if is_loopback(host):
        names.update(LOOPBACK_NAMES)
    if host in ANY_ADDRESS:
        names.update({socket.gethostname().lower(), socket.getfqdn().lower()} - {"localhost"})
    hosts = {f"{n}:{port}" for n in names}
    if port == 80:  # a browser leaves the default port out of Host
        hosts.update(names)
    return frozenset(hosts)


def host_allowed(header: str, allowed: frozenset[str], host: str, port: int) -> bool:
    """True when the Host ``header`` addresses this server. On a wildcard bind any IP-literal
    Host with our port is ours too: DNS rebinding needs a name, never a bare address."""
    header = header.strip().lower()
    if header in allowed:
        return True
    if host not in ANY_ADDRESS:
        return False
    name, _, got_port = header.rpartition(":")
    if got_port != str(port):
        return False
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (lower case), or "" when it has none."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def guard(
    app: Callable[..., Iterable[bytes]], host: str, port: int, *, allow_edits: bool
) -> Callable[..., Iterable[bytes]]:
    """The WSGI ``app`` answering only requests whose Host is this server (``host``:``port``),
    read-only unless ``allow_edits``; with edits, a write from another origin is refused."""
    allowed = own_hosts(host, port)
    inner = app if allow_edits else read_only(app)

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not host_allowed(environ.get("HTTP_HOST", ""), allowed, host, port):
            return _forbidden(WRONG_HOST, start_response)
        if allow_edits and environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS:
            # The browser's Origin (or, from older forms, Referer) says which page sent it.
            sent = environ.get("HTTP_ORIGIN")
            source = sent if sent is not None else environ.get("HTTP_REFERER")
            if source is not None:
                scheme, _, netloc = _origin(source).partition("://")
                if scheme != "http" or not host_allowed(netloc, allowed, host, port):
                    return _forbidden(FOREIGN_ORIGIN, start_response)
        return inner(environ, start_response)

    return guarded


def bind_address(host: str) -> str:
    """The address ``--host`` binds: a loopback name as its loopback address (never resolved:
    ``LOOPBACK_BIND``), ``[::1]`` as ``::1``, anything else as given."""
    bare = host.strip("[]")
    return LOOPBACK_BIND.get(bare.lower(), bare)


def is_loopback(host: str) -> bool:
    """True for the loopback addresses (127.0.0.0/8, ::1) and the names bound as one
    (``localhost``, :func:`bind_address`)."""
    try:
        return ipaddress.ip_address(bind_address(host)).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> None:
    """Refuse an empty ``--host`` (it would bind every interface and print ``http://:PORT``)."""
    if not host.strip():
        raise UsageError(
            "--host is empty: name the address to bind (default 127.0.0.1; ::1 for IPv6 loopback)"
        )


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
    check_host(host)
    check_edits(host, allow_edits)
    import optuna_dashboard  # heavy (bottle and its app): only for this command

    # Read-only storage unless edits are allowed; the guard (set once bound) adds the read-only
    # wrapper itself.
    app = optuna_dashboard.wsgi(get_storage(url, read_only=not allow_edits))
    host = bind_address(host)  # "[::1]" binds ::1, "localhost" 127.0.0.1 (not resolved)
    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
    try:
        server = make_server(host, port, read_only(app), server_class, _QuietHandler)
    except (OSError, socket.gaierror) as exc:
        raise UsageError(
            f"cannot listen on {url_host(host)}:{port} ({getattr(exc, 'strerror', None) or exc}): "
            "pass another --port (0 takes a free one) or --host"
        ) from None
    # The Host check needs the real port, known only once bound (``--port 0``).
    server.set_app(guard(app, host, server.server_port, allow_edits=allow_edits))
    return server


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
    shown = url_host(server.server_address[0])  # the address bound, "localhost" as 127.0.0.1
    mode = "EDITS ALLOWED" if allow_edits else "read-only"
    say(
        f"optuna-dashboard for {mask(url)} on http://{shown}:{server.server_port}/dashboard "
        f"({mode}; Ctrl-C to stop)"
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
