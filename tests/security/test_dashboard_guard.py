"""``dkd-tune dashboard`` answers only requests addressed to itself (DNS rebinding), refuses
cross-site writes under ``--allow-edits``, binds IPv6 loopback and refuses an empty ``--host``.
Each case starts the real dashboard process and sends real HTTP requests."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest


@pytest.fixture
def storage(tmp_path: Path) -> str:
    """A small real Optuna SQLite storage (one study, one finished trial) to serve."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    study = optuna.create_study(storage=url, study_name="guarded", direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return url


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuner", *args]


@contextmanager
def dashboard(url: str, *extra: str) -> Iterator[tuple[str, int, str]]:
    """The dashboard's bound address, port and first line; the process is stopped afterwards."""
    proc = subprocess.Popen(cli("dashboard", "--storage", url, "--port", "0", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://(\[[^\]]+\]|[^:/]+):(\d+)/", line)
        assert match, (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        yield match.group(1).strip("[]"), int(match.group(2)), line
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def send(addr: str, port: int, method: str, path: str, headers: dict[str, str],
         body: dict | None = None) -> tuple[int, bytes]:  # fmt: skip
    """One request with exactly these Host/Origin/Referer headers; the status and body."""
    conn = http.client.HTTPConnection(addr, port, timeout=30)
    try:
        # skip_host: the test sets Host itself, as a rebinding page's browser would.
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        data = json.dumps(body).encode() if body is not None else b""
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def study_names(url: str) -> set[str]:
    return {s.study_name for s in optuna.get_all_study_summaries(url)}


NEW_STUDY = {"study_name": "from-the-browser", "directions": ["maximize"]}


def test_wrong_host_is_refused_in_both_modes(storage: str) -> None:
    """A Host other than the bound address (a rebound attacker name) gets 403, GET included."""
    for extra in ((), ("--allow-edits",)):
        with dashboard(storage, *extra) as (addr, port, _):
            own = {"Host": f"127.0.0.1:{port}"}
            assert send(addr, port, "GET", "/api/studies", own)[0] == 200
            assert send(addr, port, "GET", "/api/studies", {"Host": f"localhost:{port}"})[0] == 200
            evil = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
            status, body = send(addr, port, "GET", "/api/studies", evil)
            assert status == 403 and b"Host header" in body, (extra, status, body)
            assert send(addr, port, "POST", "/api/studies", evil, NEW_STUDY)[0] == 403
            assert send(addr, port, "GET", "/api/studies", {"Host": "127.0.0.1:1"})[0] == 403
            assert send(addr, port, "GET", "/api/studies", {})[0] == 403  # no Host at all
    assert "from-the-browser" not in study_names(storage)


def test_foreign_origin_write_is_refused_with_allow_edits(storage: str) -> None:
    """With --allow-edits, a write from another site (Origin, or Referer without Origin) is 403
    and changes nothing; the issue's cross-origin form POST included."""
    with dashboard(storage, "--allow-edits") as (addr, port, line):
        assert "EDITS ALLOWED" in line
        host = {"Host": f"127.0.0.1:{port}"}
        for sent in ({"Origin": "http://attacker.example"}, {"Origin": "null"},
                     {"Origin": f"http://127.0.0.1:{port + 1}"},
                     {"Origin": f"https://127.0.0.1:{port}"},
                     {"Referer": "http://attacker.example/page.html"}):  # fmt: skip
            status, body = send(addr, port, "POST", "/api/studies", {**host, **sent}, NEW_STUDY)
            assert status == 403 and b"another site" in body, (sent, status, body)
            status, _ = send(addr, port, "POST", "/incompatible-rdb-schema", {**host, **sent}, {})
            assert status == 403, (sent, status)
    assert "from-the-browser" not in study_names(storage)


def test_own_origin_write_reaches_the_app_with_allow_edits(storage: str) -> None:
    """The dashboard's own page (Origin = its address, under any loopback name) still writes."""
    with dashboard(storage, "--allow-edits") as (addr, port, _):
        own = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
        status, body = send(addr, port, "POST", "/api/studies", own, NEW_STUDY)
        assert status == 201, (status, body)
        second = {**NEW_STUDY, "study_name": "by-referer"}
        referer = {"Host": f"127.0.0.1:{port}", "Referer": f"http://127.0.0.1:{port}/dashboard"}
        assert send(addr, port, "POST", "/api/studies", referer, second)[0] == 201
    assert {"from-the-browser", "by-referer"} <= study_names(storage)


def test_read_only_still_refuses_own_origin_writes(storage: str) -> None:
    """Without --allow-edits the right Host and Origin do not make a write pass."""
    with dashboard(storage) as (addr, port, _):
        own = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}
        status, body = send(addr, port, "POST", "/api/studies", own, NEW_STUDY)
        assert status == 403 and b"read-only" in body
    assert "from-the-browser" not in study_names(storage)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback_serves(storage: str) -> None:
    """--host ::1 binds IPv6, prints a bracketed URL and serves GET to [::1]:PORT only."""
    with dashboard(storage, "--host", "::1", "--allow-edits") as (addr, port, line):
        assert addr == "::1" and f"http://[::1]:{port}/dashboard" in line, line
        assert send("::1", port, "GET", "/api/studies", {"Host": f"[::1]:{port}"})[0] == 200
        assert send("::1", port, "GET", "/api/studies", {"Host": f"evil.example:{port}"})[0] == 403


@pytest.mark.parametrize("flag", [["--host="], ["--host", " "], ["--host=", "--allow-edits"]])
def test_empty_host_is_refused(storage: str, flag: list[str]) -> None:
    """An empty --host is one line, exit 2, instead of binding every interface."""
    out = subprocess.run(cli("dashboard", "--storage", storage, "--port", "0", *flag),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and "--host is empty" in out.stderr, out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize(
    ("host", "bound"),
    [("localhost", "127.0.0.1"), ("LOCALHOST", "127.0.0.1"), ("localhost.", "127.0.0.1"),
     ("[::1]", "::1"), ("127.0.0.2", "127.0.0.2"), ("node7.cluster", "node7.cluster")],
)  # fmt: skip
def test_loopback_names_bind_their_address_unresolved(host: str, bound: str) -> None:
    """``localhost`` binds 127.0.0.1 itself: a resolver or hosts file that maps it elsewhere
    cannot put an --allow-edits dashboard on a reachable interface; other names are the
    user's to resolve (and never loopback, so never --allow-edits)."""
    from tuner.views.dashboard import bind_address, is_loopback

    assert bind_address(host) == bound
    assert is_loopback(host) == (bound in ("127.0.0.1", "127.0.0.2", "::1"))


def test_localhost_is_a_host_name_only_on_a_loopback_bind() -> None:
    from tuner.views.dashboard import own_hosts

    assert "localhost:8080" in own_hosts("127.0.0.1", 8080)
    assert "localhost:8080" in own_hosts("::1", 8080)
    for wildcard in ("0.0.0.0", "::"):
        assert "localhost:8080" not in own_hosts(wildcard, 8080)
    assert "localhost:8080" not in own_hosts("192.0.2.7", 8080)


def test_host_localhost_serves_on_127_0_0_1(storage: str) -> None:
    """--host localhost --allow-edits binds and prints 127.0.0.1; Host localhost:PORT is its own."""
    with dashboard(storage, "--host", "localhost", "--allow-edits") as (addr, port, line):
        assert addr == "127.0.0.1" and f"http://127.0.0.1:{port}/dashboard" in line, line
        assert send(addr, port, "GET", "/api/studies", {"Host": f"localhost:{port}"})[0] == 200
        evil = {"Host": f"attacker.example:{port}"}
        assert send(addr, port, "GET", "/api/studies", evil)[0] == 403
