"""Shared fixtures: a tiny synthetic federation (built once per session into tmp) and helpers to
run the tuner on real SQLite files."""

from __future__ import annotations

import os
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from objectives import load_config, prepare_federation
from tuner import TuneOptions, tune

TINY = """\
name = "tiny"
[data]
dataset = "synthetic"
train_size = 1200
test_size = 400
[federation]
participants = 4
public_size = 300
min_size = 50
[pretrain]
epochs = 2
batch_size = 32
[kd]
batch_size = 64
eval_points = 3
"""

ROOT = Path(__file__).resolve().parents[2]
# pytest 9 imports test files in importlib mode (no sys.path entry for their folder); the test
# modules share small helpers in tuner_helpers.py next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny config file and a bundle folder holding its already-built bundle."""
    root = tmp_path_factory.mktemp("tiny")
    config = root / "tiny.toml"
    config.write_text(TINY)
    bundles = root / "bundles"
    prepare_federation(load_config(config), directory=bundles)
    return {"config": str(config), "bundles": str(bundles), "root": root}


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


@pytest.fixture(scope="session")
def tuned(tiny: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished run as a user gets it: ``dkd-tune --pairs 0-1,1-2 --trials 4`` on the tiny
    federation with every other default on (TPE, the quartile pruner, confirmation with 3 seeds).
    Read it through :func:`tuned_copy` when a test may write."""
    folder = tmp_path_factory.mktemp("tuned")
    url = f"sqlite:///{folder / 'run.db'}"
    opts = TuneOptions(config=tiny["config"], bundles=tiny["bundles"], storage=url,
                       pairs="0-1,1-2", trials=4, progress="quiet")  # fmt: skip
    tune(opts, say=lambda _m: None)
    return {"url": url, "path": folder / "run.db", "studies": ["tiny/0-1", "tiny/1-2"], **tiny}


@pytest.fixture
def tuned_copy(tuned: dict, tmp_path: Path) -> dict:
    """A copy of the :func:`tuned` run's database in this test's folder, through SQLite's backup
    (the file alone may lack commits still in its write-ahead log)."""
    path = tmp_path / "run.db"
    src, dst = sqlite3.connect(tuned["path"]), sqlite3.connect(path)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return {**tuned, "url": f"sqlite:///{path}", "path": path}


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
