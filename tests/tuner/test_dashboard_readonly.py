"""``dkd-tune dashboard`` as a real process over HTTP: read-only by default (every write route of
optuna-dashboard answered 403, the database file byte for byte unchanged), ``--allow-edits``
only on a loopback host."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import optuna_dashboard
from optuna_dashboard._note import get_note_from_system_attrs
from tuner_helpers import cli, db_digest

WRITE_METHODS = {"POST", "PUT", "DELETE", "PATCH"}


@contextmanager
def dashboard(url: str, *extra: str) -> Iterator[tuple[str, str]]:
    """The dashboard's base address and its first line; the process is stopped afterwards."""
    proc = subprocess.Popen([*cli("dashboard", "--storage", url, "--port", "0", *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, (line, proc.poll())
        yield match.group(0), line
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def request(base: str, method: str, path: str, body: dict | None = None) -> int:
    data = json.dumps(body or {}).encode() if method != "GET" else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def write_routes(url: str) -> list[tuple[str, str]]:
    """Every write route optuna-dashboard's app has, made concrete with a real study and trial
    (so that, unguarded, it would act on them)."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = storage.get_all_studies()[0]
        trial = storage.get_all_trials(study._study_id)[0]
        app = optuna_dashboard.wsgi(storage)
        values = {"study_id": study._study_id, "trial_id": trial._trial_id}
        routes = []
        for route in app.routes:
            if route.method.upper() in WRITE_METHODS:
                fill = lambda m: str(values.get(m[1], uuid.uuid4()))  # noqa: E731
                path = re.sub(r"<(\w+)(?::[^>]*)?>", fill, route.rule)
                routes.append((route.method.upper(), path))
        return routes
    finally:
        storage.engine.dispose()


def unchanged(path: Path, before: bytes, digest: str | None) -> None:
    """The database file byte for byte as before, no commit waiting in its write-ahead log
    (readers leave an empty ``-wal``), and every row as before."""
    assert path.read_bytes() == before
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert db_digest(f"sqlite:///{path}") == digest


def test_every_write_route_is_refused_and_nothing_changes(tuned_copy) -> None:
    url, path = tuned_copy["url"], tuned_copy["path"]
    routes = write_routes(url)
    # optuna-dashboard's own destructive routes are among them (the two, at least).
    assert ("DELETE", "/api/studies/1") in [(m, re.sub(r"\d+$", "1", p)) for m, p in routes]
    assert any(m == "POST" and p == "/api/studies" for m, p in routes)
    before, digest = path.read_bytes(), db_digest(url)
    with dashboard(url) as (base, line):
        assert "read-only" in line
        assert request(base, "GET", "/api/studies") == 200  # reading works
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as resp:
            listed = json.load(resp)["study_summaries"]
        assert len(listed) == 4  # two pair studies and their confirmation studies
        for study in listed:  # each names what it plots: "gain (pp)", not "Objective 0"
            detail = f"{base}/api/studies/{study['study_id']}?after=0"
            with urllib.request.urlopen(detail, timeout=30) as resp:
                assert json.load(resp)["objective_names"] == ["gain (pp)"], study["study_name"]
        refused = {(m, p): request(base, m, p, {"study_name": "x", "directions": ["maximize"]})
                   for m, p in routes}  # fmt: skip
    assert set(refused.values()) == {403}, refused
    unchanged(path, before, digest)


def test_allow_edits_is_refused_off_loopback(tuned_copy) -> None:
    url, path = tuned_copy["url"], tuned_copy["path"]
    before, digest = path.read_bytes(), db_digest(url)
    out = subprocess.run(cli("dashboard", "--storage", url, "--host", "0.0.0.0", "--allow-edits"),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--allow-edits is only for a loopback host" in out.stderr and "ssh -L" in out.stderr
    unchanged(path, before, digest)


def test_allow_edits_on_loopback_writes(tuned_copy) -> None:
    url = tuned_copy["url"]
    storage = optuna.storages.RDBStorage(url)
    sid = storage.get_study_id_from_name(tuned_copy["studies"][0])
    version = get_note_from_system_attrs(storage.get_study_system_attrs(sid), None)["version"]
    with dashboard(url, "--allow-edits") as (base, line):
        assert "EDITS ALLOWED" in line
        note = {"version": version + 1, "body": "edited from the browser"}
        assert request(base, "PUT", f"/api/studies/{sid}/note", note) == 204
    attrs = storage.get_study_system_attrs(sid)
    assert get_note_from_system_attrs(attrs, None)["body"] == "edited from the browser"
    storage.engine.dispose()
