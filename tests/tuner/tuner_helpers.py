"""Helpers for the tuner tests (a module of its own: conftest is not importable by name)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import optuna


def db_digest(url: str) -> str | None:
    """Bytes of a SQLite database file (None if absent): 'unchanged' means byte for byte."""
    path = Path(url.removeprefix("sqlite:///"))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


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
