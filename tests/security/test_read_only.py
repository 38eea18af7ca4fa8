"""Reading never writes (issue 27): status, export and report open a database so that nothing can
change it; a file or database without Optuna's tables is one line and exit 2, left as it was.

Most cases call the CLI's entry point (``tuner.cli.main``) in this process: the same line and
exit code, without the seconds of imports a fresh interpreter costs. Each command also runs once
as a real process (exit status and files as a shell leaves them): status and export on the
read-only WAL file, report on an empty file."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tuner.cli import main

ROOT = Path(__file__).resolve().parents[2]

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def dkd(*args: str) -> subprocess.CompletedProcess[str]:
    """``dkd-tune ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def dkd_here(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess[str]:
    """``dkd-tune ARGS`` through the entry point in this process: its exit code and output."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["dkd-tune", *args], code, out, err)


def fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """The file's sha256, its mtime in ns, and every file beside it (a -wal/-shm would show)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_status_and_export_leave_a_read_only_file_unchanged(
    tuned_copy: dict, tmp_path: Path, journal: str, capsys: pytest.CaptureFixture
) -> None:
    """A chmod-444 copy of a real run (in WAL mode as dkd-tune leaves it, and in rollback mode as
    plain Optuna writes it) is read; not one byte, its mtime or the folder changes. The WAL file
    is read by real processes (a reader that left its connection open would leave -wal/-shm
    files beside it until it exits), the rollback one in this process."""
    run = dkd if journal == "wal" else lambda *args: dkd_here(capsys, *args)
    path: Path = tuned_copy["path"]
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA journal_mode={journal}")
    con.close()
    path.chmod(0o444)
    before = fingerprint(path)
    status = run("status", "--storage", tuned_copy["url"])
    assert status.returncode == 0, status.stderr
    assert "0-1" in status.stdout and "1-2" in status.stdout
    export = run("export", "--storage", tuned_copy["url"], "--format", "json")
    assert export.returncode == 0, export.stderr
    assert '"tiny/0-1"' in export.stdout or "0-1" in export.stdout
    assert fingerprint(path) == before


def _unrelated(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize("content", ["empty", "unrelated table"])
@pytest.mark.parametrize("command", ["status", "export", "report"])
def test_a_file_without_optuna_tables_is_one_line_and_unchanged(
    tmp_path: Path, content: str, command: str, capsys: pytest.CaptureFixture
) -> None:
    """A 0-byte file, or a SQLite file of something else, is refused in one line; no table is
    created, the file and its folder stay as they were. (report on the empty file: as a real
    process, report's one; the others in this process.)"""
    path = tmp_path / "other.db"
    if content == "empty":
        path.touch()
    else:
        _unrelated(path)
    before = fingerprint(path)
    extra = ["--out", str(tmp_path / "r.html")] if command == "report" else []
    args = (command, "--storage", f"sqlite:///{path}", *extra)
    real = command == "report" and content == "empty"
    proc = dkd(*args) if real else dkd_here(capsys, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no Optuna study tables" in proc.stderr
    assert fingerprint(path) == before
    assert not (tmp_path / "r.html").exists()


@pytest.fixture
def empty_pg() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards (skipped without a server unless
    DKD_TUNE_REQUIRE_POSTGRES=1)."""
    admin = sqlalchemy.create_engine(
        PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        conn = admin.connect()
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("DKD_TUNE_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"no PostgreSQL server: {exc.orig}")
    name = f"dkd_ro_{uuid.uuid4().hex[:10]}"
    conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        from tuner.store import storage as tuner_storage

        # The reader a command opened in this process (the database is dropped: never reused).
        cached = tuner_storage._STORAGES.pop(f"read-only:{url}", None)
        if cached is not None:
            cached.engine.dispose()
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        conn.close()
        admin.dispose()


def _tables(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            return [r[0] for r in rows]
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", ["status", "export"])
def test_an_empty_postgresql_database_is_one_line_and_stays_empty(
    empty_pg: str, command: str, capsys: pytest.CaptureFixture
) -> None:
    """status/export on a database without Optuna's tables: one line, exit 2, no table created."""
    proc = dkd_here(capsys, command, "--storage", empty_pg)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no Optuna study tables" in proc.stderr
    assert _tables(empty_pg) == []


def test_dkd_tune_rewrites_only_its_own_part_of_a_note(tuned_copy: dict) -> None:
    """A user's note survives dkd-tune's note writing (as at the end of a run or confirm), and a
    second write replaces dkd-tune's part instead of adding another."""
    import optuna
    from optuna_dashboard import get_note, save_note

    from tuner.store.db import open_storage
    from tuner.views.notes import OWN_END, OWN_START, write_notes

    storage = open_storage(tuned_copy["url"])
    study = optuna.load_study(study_name="tiny/0-1", storage=storage)
    save_note(study, "## Pair 0-1 of tiny\n\nMy own remark: rerun with more data.\n")
    assert write_notes(storage, tuned_copy["url"], ["tiny/0-1"]) == 1
    first = get_note(study)
    assert "My own remark: rerun with more data." in first
    assert first.count(OWN_START) == 1 and first.count(OWN_END) == 1
    ours = first[first.index(OWN_START) : first.index(OWN_END)]
    assert "Student **" in ours and "My own remark" not in ours

    # The user edits around dkd-tune's part; dkd-tune's part changes (a stale text is replaced).
    edited = "Above, mine.\n" + first.replace("Student **", "OLD Student **") + "Below, mine.\n"
    save_note(study, edited)
    write_notes(storage, tuned_copy["url"], ["tiny/0-1"])
    second = get_note(study)
    assert second.startswith("Above, mine.\n") and second.endswith("Below, mine.\n")
    assert "My own remark: rerun with more data." in second
    assert "OLD Student" not in second
    assert second.count(OWN_START) == 1 and second.count("Student **") == first.count("Student **")


def test_a_postgresql_database_with_optuna_tables_is_read(
    empty_pg: str, capsys: pytest.CaptureFixture
) -> None:
    """The read-only session (default_transaction_read_only) still reads a set-up database."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=empty_pg, study_name="not-dkd")
    proc = dkd_here(capsys, "status", "--storage", empty_pg)
    assert proc.returncode == 0, proc.stderr
    assert "no dkd-tune studies" in proc.stdout
