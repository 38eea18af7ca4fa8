"""Helpers for the tuner tests (a module of its own: conftest is not importable by name)."""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
import sys
from pathlib import Path

import optuna


def db_digest(url: str) -> str | None:
    """What a SQLite database holds, row for row (None if the file is absent): 'unchanged' means
    every table has the same rows. Read through SQLite rather than from the file's bytes: in WAL
    mode a commit lands in the ``-wal`` file, not in the main file, and a checkpoint moves pages
    without changing what they hold."""
    path = Path(url.removeprefix("sqlite:///"))
    if not path.exists():
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
    finally:
        con.close()


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """A study's trials read with a fresh plain optuna storage (not the tuner's)."""
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def finished(trials: list[optuna.trial.FrozenTrial]) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in states for t in trials)


def cli(*args: str) -> list[str]:
    """The command line of ``dkd-tune ARGS`` in this interpreter."""
    return [sys.executable, "-m", "tuner", *args]


def bench_module(name: str):
    """``bench/<name>.py`` loaded as a module, for a test that asserts on what the bench measures
    (one copy of the harness or model: what the benchmark measures is what the suite checks)."""
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module
