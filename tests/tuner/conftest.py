"""Shared fixtures: options for runs on the tiny synthetic federation (tests/conftest.py builds it
once per session) and each storage backend."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from tuner import TuneOptions

# pytest 9 imports test files in importlib mode (no sys.path entry for their folder); the test
# modules share small helpers in tuner_helpers.py next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def opts(tiny: dict, tmp_path: Path):
    """A factory of TuneOptions on the tiny federation and a fresh SQLite file in tmp_path, with
    the product's defaults (TPE, the quartile pruner, confirmation with 3 seeds)."""

    def make(**kw) -> TuneOptions:
        base = dict(
            config=tiny["config"],
            bundles=tiny["bundles"],
            storage=f"sqlite:///{tmp_path / 'tune.db'}",
            pairs="0-1",
            trials=3,
            progress="quiet",
        )  # every other option at the product's default (a test that turns one off says why)
        base.update(kw)
        return TuneOptions(**base)

    return make


#: A PostgreSQL server the tests may create throw-away databases on (trust auth by default).
PG_ADMIN = os.environ.get(
    "DKD_TUNE_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test against each storage backend: a fresh SQLite file, or a fresh PostgreSQL
    database (skipped when no server answers, unless DKD_TUNE_REQUIRE_POSTGRES=1 as in CI)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'backend.db'}"
        return
    admin = sqlalchemy.create_engine(
        PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        conn = admin.connect()
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("DKD_TUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {exc.orig}")
        pytest.skip("no PostgreSQL server (set DKD_TUNE_POSTGRES_URL)")
    name = f"dkd_tune_test_{uuid.uuid4().hex[:12]}"
    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sqlalchemy.engine.make_url(PG_ADMIN).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        from tuner.store import storage as tuner_storage

        cached = tuner_storage._STORAGES.pop(url.render_as_string(hide_password=False), None)
        if cached is not None:
            cached.engine.dispose()
        # FORCE: loky workers that outlive the test may still hold connections.
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        admin.dispose()
