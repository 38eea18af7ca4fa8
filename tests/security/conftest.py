"""What the adversarial battery shares: a database file's bytes before and after a refusal, and
real SQLite storages made cheaply from study user attrs (the attrs a run records; no trial runs)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.study import StudyDirection
from sqlalchemy import event


def fingerprint(path: Path) -> tuple[str, str | None]:
    """The sha256 of the database file, and of its ``-wal`` file where that holds anything (in
    WAL mode a commit lands there first; a reader leaves it empty or removes it)."""
    wal = Path(f"{path}-wal")
    frames = wal.read_bytes() if wal.exists() else b""
    return (hashlib.sha256(path.read_bytes()).hexdigest(),
            hashlib.sha256(frames).hexdigest() if frames else None)  # fmt: skip


@pytest.fixture
def untouched() -> Callable[[Path], Callable[[], None]]:
    """``check = untouched(path)`` before a refusal, ``check()`` after it: asserts the database
    is byte for byte what it was (sha256 of the file and of any -wal beside it)."""

    def watch(path: Path) -> Callable[[], None]:
        before = fingerprint(path)

        def check() -> None:
            assert fingerprint(path) == before, f"{path} changed"

        return check

    return watch


def _pair_attrs(federation: str, federation_hash: str, pair: tuple[int, int]) -> dict[str, Any]:
    return {"mode": "pair", "strategy": "race", "federation": federation,
            "federation_hash": federation_hash, "pair": list(pair), "ready": True,
            "run": {"budget": 5, "sampler": "tpe", "pruner": "none", "seed": 0,
                    "retries": 1}}  # fmt: skip


@pytest.fixture
def pair_attrs() -> Callable[[str, str, tuple[int, int]], dict[str, Any]]:
    """``pair_attrs(federation, federation_hash, pair)``: the user attrs status, export and a
    joining worker read first from a pair study."""
    return _pair_attrs


@pytest.fixture(scope="session")
def _empty_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Optuna SQLite file with its tables and no study, made once (creating the schema is
    most of a storage's cost)."""
    path = tmp_path_factory.mktemp("empty-storage") / "empty.db"
    optuna.storages.RDBStorage(f"sqlite:///{path}").engine.dispose()
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")  # as dkd-tune leaves its storages
    finally:
        con.close()
    return path


@pytest.fixture
def make_storage(tmp_path: Path, _empty_storage: Path) -> Callable[..., tuple[str, Path]]:
    """``make_storage({study name: user attrs})``: a real Optuna SQLite file holding those
    studies (no trials), in WAL mode as dkd-tune leaves its storages, every connection closed
    (no -wal left beside it).
    Returns its URL and path."""

    def make(studies: dict[str, dict[str, Any]], name: str = "shared.db") -> tuple[str, Path]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" lines
        path = tmp_path / name
        shutil.copyfile(_empty_storage, path)
        url = f"sqlite:///{path}"
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        # No fsync per commit while filling a throw-away file (dispose: new connections get it).
        event.listen(storage.engine, "connect", lambda c, _: c.execute("PRAGMA synchronous=OFF"))
        storage.engine.dispose()
        try:
            for study, attrs in studies.items():
                sid = storage.create_new_study([StudyDirection.MAXIMIZE], study)
                for key, value in attrs.items():
                    storage.set_study_user_attr(sid, key, value)
        finally:
            storage.engine.dispose()  # the last connection closed: the -wal is checkpointed
        return url, path

    return make
