"""One Optuna RDBStorage per process and storage URL, shared by every pair study.

SQLite is the zero-setup default; PostgreSQL (or any SQLAlchemy URL) serves many machines with the
same code. Everything that could fail on a bad URL is checked by :func:`check_storage` *before*
anything is created, so a typo never leaves an empty database file behind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from tuner.errors import StorageError
from tuner.options import DEFAULT_STORAGE

#: Seconds a SQLite writer waits for the lock before failing; several workers commit every few
#: hundred milliseconds, so contention is normal and must not surface as "database is locked".
SQLITE_BUSY_TIMEOUT_S = 120
#: Seconds to wait for a database server; an unreachable host must fail fast, not hang.
CONNECT_TIMEOUT_S = 5
#: Connections one process may hold to a database server: the worker's trials and the heartbeat
#: thread each need one at a time; every pair study shares them (one engine per process).
SERVER_CONNECTIONS = 2
#: Seconds a thread waits for one of those connections before giving up.
POOL_TIMEOUT_S = 120

_STORAGES: dict[str, optuna.storages.RDBStorage] = {}
_LOCK = threading.Lock()


_SECRET_KEYS = {"password", "sslpassword", "passfile", "sslkey", "pass", "pwd"}


def mask(url: str) -> str:
    """The URL with its password replaced by ***, safe for messages and logs."""
    try:
        parsed = make_url(url)
        # hide_password covers user:password@ only; libpq also takes secrets as query keys
        secret = {k: "***" for k in parsed.query if k.lower() in _SECRET_KEYS}
        shown = parsed.update_query_dict(secret).render_as_string(hide_password=True)
        return shown.replace("%2A%2A%2A", "***")
    except Exception:  # not even parseable: show nothing that could be a secret
        return "<unparseable storage URL>"


def sqlite_path(url: str) -> Path | None:
    """The database file of a sqlite URL; None for other backends or in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_storage(url: str, *, read_only: bool = False) -> None:
    """Raise StorageError (one line) unless ``url`` can be opened; create nothing on failure.

    SQLite: the folder must exist and be writable (probed with a temporary file, since root
    ignores permission bits); ``read_only`` (the read commands) asks only for a readable file, so
    a read-only mount or a chmod-444 copy works as it does with plain Optuna. A server: one
    connection with a short timeout.
    """
    shown = mask(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError(
            "--storage is not a database URL: write e.g. sqlite:///dkd-tune.db or "
            "postgresql+psycopg://user:password@host/db"
        ) from None
    path = sqlite_path(url)
    if parsed.get_backend_name() == "sqlite":
        if path is None:
            return
        if path.exists() and not path.is_file():
            raise StorageError(f"storage path {path} is not a file: pass --storage sqlite:///FILE")
        if read_only:
            if not os.access(path, os.R_OK):
                raise StorageError(
                    f"storage path {path} is not readable: fix its permissions or pass --storage"
                )
            return
        folder = path.parent if str(path.parent) else Path(".")
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".dkd-tune-probe-"):
                pass
            if path.exists() and not os.access(path, os.W_OK):
                raise PermissionError(path)
        except OSError as exc:
            raise StorageError(
                f"storage path {path} is not writable ({exc.__class__.__name__}): pass --storage "
                "sqlite:///PATH in a folder you can write"
            ) from None
        return
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    except Exception as exc:
        raise StorageError(
            f"storage {shown} cannot be used ({_first_line(exc, url)}): check the URL and that "
            "its driver is installed"
        ) from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        raise StorageError(
            f"storage {shown} is unreachable ({_first_line(exc, url)}): start the database "
            "server or fix --storage"
        ) from None
    finally:
        engine.dispose()


def get_storage(
    url: str = DEFAULT_STORAGE, *, read_only: bool = False, live: bool = True
) -> optuna.storages.RDBStorage:
    """The process's single RDBStorage for ``url`` (one engine and connection pool for all pairs).

    Call :func:`check_storage` first: this creates the database (tables) when it is new. With
    ``read_only`` (status, export, report, a read-only dashboard) nothing is ever written: see
    :func:`_open_read_only`; ``live=False`` is for a command that reads once and exits.
    """
    with _LOCK:
        if read_only and url in _STORAGES:  # this process writes it already: read its own
            return _STORAGES[url]
        key = f"read-only:{url}" if read_only else url
        if key not in _STORAGES:
            try:
                _STORAGES[key] = _open_read_only(url, live) if read_only else _open(url)
            except StorageError:
                raise
            except Exception as exc:
                raise StorageError(
                    f"storage {mask(url)} cannot be opened ({_first_line(exc, url)}): fix --storage"
                ) from None
        return _STORAGES[key]


#: Optuna's tables a reader needs; alembic_version holds the schema stamp optuna writes last.
_OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}


def _open_read_only(url: str, live: bool) -> optuna.storages.RDBStorage:
    """An RDBStorage that cannot change the database (issue 27): no tables created, no schema
    stamp, no journal-mode or other writing pragma; a database without Optuna's tables is one line.

    SQLite is opened with ``mode=ro``. A WAL file that no process has open (no -wal beside it)
    is read as ``immutable`` when not ``live``: a read-only connection to a WAL file otherwise
    creates -wal and -shm files that only a writer removes again. A live reader (the dashboard)
    must see new trials, so it takes ``mode=ro`` and SQLite's shared-memory index, unless the
    folder is not writable (a read-only mount).
    A server: PostgreSQL sessions are also put in read-only transactions by the server itself.
    """
    path = sqlite_path(url)
    kwargs = _engine_kwargs(url)
    if path is not None:
        mode = "ro"
        idle_wal = _is_wal(path) and not Path(f"{path}-wal").exists()
        # On a read-only mount SQLite cannot create the -shm index a WAL reader needs; nobody
        # can write there either, so the file cannot change under an immutable reader.
        if idle_wal and (not live or not os.access(path.parent, os.W_OK)):
            mode = "ro&immutable=1"
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode={mode}"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(
                uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
            )

        kwargs = {"creator": connect, "poolclass": sqlalchemy.pool.NullPool}
    elif make_url(url).get_backend_name() == "postgresql":
        args = dict(kwargs["connect_args"])
        args["options"] = args["options"] + " -c default_transaction_read_only=on"
        kwargs = {**kwargs, "connect_args": args}
    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        with engine.connect() as conn:
            tables = set(sqlalchemy.inspect(conn).get_table_names())
            stamped = "alembic_version" in tables and bool(
                conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar()
            )
    except sqlalchemy.exc.DatabaseError as exc:  # e.g. a file that is not SQLite at all
        raise StorageError(
            f"storage {mask(url)} cannot be read ({_first_line(exc, url)}): pass the --storage "
            "of a dkd-tune run"
        ) from None
    finally:
        engine.dispose()
    if not tables >= _OPTUNA_TABLES or not stamped:
        raise StorageError(
            f"storage {mask(url)} holds no Optuna study tables: pass the --storage of a dkd-tune "
            "run (read commands never create them)"
        )
    # The tables exist and are stamped, so optuna's own initialisation only reads; the schema is
    # checked by tuner.store.db.check_schema with a one-line message instead of optuna's.
    return optuna.storages.RDBStorage(
        url, engine_kwargs=kwargs, skip_compatibility_check=True, skip_table_creation=True
    )


def _is_wal(path: Path) -> bool:
    """The file header says WAL (read and write versions 2 at bytes 18-19)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18:20] == b"\x02\x02"


def _engine_kwargs(url: str) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if backend == "postgresql":
        return {
            "connect_args": {
                "connect_timeout": CONNECT_TIMEOUT_S,
                # Names the process in pg_stat_activity, so an operator (and the connection
                # test) can count connections per worker process.
                "application_name": application_name(),
                # Our sessions' commits do not wait for the server's WAL flush (~4 ms each
                # here, and a trial commits a few dozen times). A server crash may lose the
                # last fraction of a second of trials, which the budget then runs again; it
                # cannot corrupt anything. The same trade as SQLite's synchronous=NORMAL.
                "options": "-c synchronous_commit=off",
            },
            "pool_pre_ping": True,
            # A hard bound of SERVER_CONNECTIONS per process, whatever the pair count: a third
            # thread (e.g. the progress line of an in-process worker) waits for a free connection
            # instead of opening one. Every transaction is short, so the wait is milliseconds.
            "pool_size": SERVER_CONNECTIONS,
            "max_overflow": 0,
            "pool_timeout": POOL_TIMEOUT_S,
        }
    if backend == "mysql":
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def _first_line(exc: BaseException, url: str | None = None) -> str:
    """The error's first line, with the URL's password blanked should a driver echo it."""
    text = str(exc).strip().splitlines()
    line = f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__
    password = _password(url) if url else None
    return line.replace(password, "***") if password else line


def _password(url: str) -> str | None:
    try:
        return make_url(url).password or None
    except Exception:
        return None


# SQLite on one machine: why no worker ever sees "database is locked".
# * BEGIN IMMEDIATE on every transaction. pysqlite runs a SELECT outside any transaction and
#   opens one lazily at the first write, so optuna's "read WAITING, then set RUNNING" can be done
#   by two processes for the same trial (SQLite ignores SELECT ... FOR UPDATE), and a reader that
#   later writes can hit a lock upgrade deadlock that SQLite reports at once, without waiting.
#   Taking the write lock up front makes read-then-write atomic and turns every conflict into a
#   wait that the busy timeout covers. Writers are serialised: SQLite has one writer at a time
#   anyway, and a trial writes a few dozen short transactions over seconds of compute.
# * WAL journal with synchronous=NORMAL. A commit then appends to the log without an fsync
#   (~0.01 ms instead of ~15 ms here), so the write lock is held for microseconds and 4+ workers
#   do not queue behind each other's disk flushes; readers (status, optuna-dashboard) never block
#   the writers. The cost: a power cut (not a crash of a process) may lose the last commits, which
#   the budget then simply runs again. WAL needs all processes on one machine (shared memory),
#   which is SQLite's place here anyway; across machines use PostgreSQL.
# Installed only after RDBStorage's own initialisation, which nests two connections' transactions
# (alembic) and would deadlock on itself under IMMEDIATE; that initialisation is serialised
# across processes with a lock on the database file instead (see _open).
def _serialise_sqlite(engine: Engine) -> None:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below is the only one
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    def on_begin(conn: sqlalchemy.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    engine.dispose()  # connections opened during initialisation lack on_connect


def _use_wal(path: Path) -> None:
    """Switch the database file to WAL (a persistent property of the file; a no-op once set)."""
    con = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def application_name() -> str:
    """How this process shows in PostgreSQL's pg_stat_activity: ``dkd-tune <host>:<pid>``."""
    return f"dkd-tune {socket.gethostname()}:{os.getpid()}"[:63]  # the server keeps 63 bytes


#: Key of the PostgreSQL advisory lock held while a process initialises the schema.
_PG_INIT_LOCK = 0x646B64  # "dkd"


def _open(url: str) -> optuna.storages.RDBStorage:
    path = sqlite_path(url)
    if path is None and make_url(url).get_backend_name() == "postgresql":
        return _open_postgresql(url)
    if path is None:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    # Two processes creating a new database at once race in create_all (table exists) and in
    # optuna's version row; an flock on the file itself (SQLite's own locks are fcntl byte-range
    # locks, independent of flock on Linux) lets one initialise while the other waits.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _use_wal(path)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    _serialise_sqlite(storage.engine)
    return storage


def _open_postgresql(url: str) -> optuna.storages.RDBStorage:
    """Concurrent create_all on a fresh database collides in PostgreSQL's catalog (duplicate type
    names): while optuna creates its tables, hold a session advisory lock. Only the process that
    finds the database empty takes it, for the second or so the schema takes, on a connection of
    its own (its third then: optuna's initialisation nests two); workers joining a database that
    is set up already skip the lock and stay within SERVER_CONNECTIONS throughout."""
    engine = sqlalchemy.create_engine(
        url, poolclass=sqlalchemy.pool.NullPool, connect_args=_engine_kwargs(url)["connect_args"]
    )
    try:
        with engine.connect() as conn:
            if not _pg_is_set_up(conn):
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_INIT_LOCK})")
                try:
                    return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
                finally:
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_INIT_LOCK})")
    finally:
        engine.dispose()
    return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))


def _pg_is_set_up(conn: sqlalchemy.Connection) -> bool:
    """Optuna's tables exist and its initialisation finished (alembic's stamp is its last
    step)."""
    if conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar() is None:
        return False
    return bool(conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar())
