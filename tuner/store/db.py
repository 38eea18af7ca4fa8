"""The storage boundary: every query dkd-tune runs on Optuna's own tables, in one module.

Optuna's public API loads whole trials (params, attrs, values); a worker that counts trials
before each claim, a heartbeat that looks for silent workers and a progress line need one row per
study instead, so a few queries read the tables directly. They are written against Optuna's
schema ``SCHEMA_VERSIONS``; :func:`check_schema` refuses another one before any query runs, so a
new Optuna with new tables fails with one line instead of wrong counts (docs/design.md §4).

:func:`database_errors` turns the SQLAlchemy errors of a database that goes away in the middle of
a run into one line (DatabaseGone, exit 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.trial import TrialState

from tuner.errors import DatabaseGone, StorageError
from tuner.store.storage import get_storage, mask

#: Optuna's table schemas (alembic revisions) these queries were written and tested against.
SCHEMA_VERSIONS = ("v3.2.0.a",)


def check_schema(storage: optuna.storages.RDBStorage) -> None:
    """Refuse a database whose Optuna schema is not one the raw queries know (one line)."""
    version = storage.get_current_version()
    if version not in SCHEMA_VERSIONS:
        raise StorageError(
            f"the database has Optuna schema {version}, dkd-tune knows {', '.join(SCHEMA_VERSIONS)}"
            f" (optuna {optuna.__version__}): install the Optuna version that wrote it, or "
            "upgrade the database with `optuna storage upgrade --storage URL`"
        )


def quiet_optuna() -> None:
    """Optuna's own log lines off: its study-creation notes, and the tracebacks it logs as
    warnings when the database fails, would bury the one line dkd-tune prints for that."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)


_CHECKED: set[tuple[str, bool]] = set()


def open_storage(
    url: str, *, read_only: bool = False, live: bool = True
) -> optuna.storages.RDBStorage:
    """The process's storage for ``url`` (tuner.store.storage), its schema checked once;
    ``read_only`` for the commands that must never change the database."""
    storage = get_storage(url, read_only=read_only, live=live)
    key = (url, read_only)
    if key not in _CHECKED:
        check_schema(storage)
        _CHECKED.add(key)
    return storage


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a SQLAlchemy error (the server went away, the file vanished) into one line."""
    try:
        yield
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        # Optuna wraps the driver's error in StorageInternalError; name the driver's.
        root = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
        cause = str(getattr(root, "orig", None) or root or exc).strip().splitlines()[0]
        raise DatabaseGone(
            f"the database {mask(url)} stopped answering ({cause}): bring it back, then rerun the "
            "same command; finished trials are kept and the missing ones are run"
        ) from None


#: A study user attr saying the study needs no more trials (why: a key of tuner.search.race.STOPS):
#: written by a worker that finds a raced pair study over, read with the counts.
STOPPED_ATTR = "stopped"


@dataclass
class Counts:
    """Trials of one study by state (surplus claims excluded from ``failed``), and whether the
    study said it needs no more (``STOPPED_ATTR``)."""

    complete: int = 0
    pruned: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0
    stopped: bool = False

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    def left(self, budget: int) -> int:
        """Trials still to start: the budget minus finished and running ones (never below 0;
        none once the study stopped)."""
        return 0 if self.stopped else max(0, budget - self.finished - self.running)


def _ids(study_ids: Iterable[int]) -> str:
    return ",".join(str(int(i)) for i in study_ids)


def count_trials(
    storage: optuna.storages.RDBStorage, study_ids: Iterable[int]
) -> dict[int, Counts]:
    """Counts per study in three queries (a worker asks before every trial, for every study)."""
    ids = list(study_ids)
    out = {i: Counts() for i in ids}
    if not ids:
        return out
    surplus = sqlalchemy.text(
        "SELECT t.study_id, count(*) FROM trials t JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'surplus' "
        f"WHERE t.study_id IN ({_ids(ids)}) GROUP BY t.study_id"
    )
    by_state = sqlalchemy.text(
        f"SELECT study_id, state, count(*) FROM trials WHERE study_id IN ({_ids(ids)}) "
        "GROUP BY study_id, state"
    )
    stopped = sqlalchemy.text(
        "SELECT study_id FROM study_user_attributes "
        f"WHERE key = '{STOPPED_ATTR}' AND study_id IN ({_ids(ids)})"
    )
    fields = {"COMPLETE": "complete", "PRUNED": "pruned", "RUNNING": "running",
              "WAITING": "waiting", "FAIL": "failed"}  # fmt: skip
    with storage.engine.connect() as conn:
        for study_id, state, n in conn.execute(by_state):
            name = fields[state.name if isinstance(state, TrialState) else str(state)]
            setattr(out[study_id], name, getattr(out[study_id], name) + n)
        for study_id, n in conn.execute(surplus):
            out[study_id].failed -= n
        for (study_id,) in conn.execute(stopped):
            out[study_id].stopped = True
    return out


def best_value(storage: optuna.storages.RDBStorage, study_ids: Iterable[int]) -> float | None:
    """The largest value of any COMPLETE trial in these studies (one query, for progress)."""
    ids = _ids(study_ids)
    if not ids:
        return None
    query = sqlalchemy.text(
        "SELECT max(v.value) FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id "
        f"WHERE t.study_id IN ({ids}) AND t.state = 'COMPLETE'"
    )
    with storage.engine.connect() as conn:
        value = conn.execute(query).scalar()
    return None if value is None else float(value)


def trial_spans(
    storage: optuna.storages.RDBStorage, names: Iterable[str]
) -> dict[str, tuple[datetime | None, datetime | None]]:
    """Per study name: its first trial's start and its last trial's completion (one query; a
    study without trials is absent). The wall time a federation's run took is read from these."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    query = (
        sqlalchemy.text(
            "SELECT s.study_name AS name, min(t.datetime_start) AS first_start, "
            "max(t.datetime_complete) AS last_complete FROM trials t "
            "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name IN :names "
            "GROUP BY s.study_name"
        )
        .bindparams(sqlalchemy.bindparam("names", expanding=True))
        # typed, so that SQLite's stored text comes back as datetimes, as PostgreSQL's does
        .columns(
            name=sqlalchemy.String,
            first_start=sqlalchemy.DateTime,
            last_complete=sqlalchemy.DateTime,
        )
    )
    with storage.engine.connect() as conn:
        return {n: (a, b) for n, a, b in conn.execute(query, {"names": wanted})}


def running_with_beats(
    storage: optuna.storages.RDBStorage, study_ids: Iterable[int]
) -> list[tuple[int, int, object]]:
    """(trial id, study id, last heartbeat or None) of every RUNNING trial of these studies."""
    ids = _ids(study_ids)
    if not ids:
        return []
    query = sqlalchemy.text(
        "SELECT t.trial_id, t.study_id, h.heartbeat FROM trials t "
        "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        f"WHERE t.state = 'RUNNING' AND t.study_id IN ({ids})"
    )
    with storage.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


__all__ = [
    "SCHEMA_VERSIONS",
    "STOPPED_ATTR",
    "Counts",
    "best_value",
    "check_schema",
    "count_trials",
    "database_errors",
    "open_storage",
    "quiet_optuna",
    "running_with_beats",
    "trial_spans",
]
