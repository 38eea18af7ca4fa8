"""A stored config never runs code (issue 27): a participant's ``module:callable`` model comes
only from the user's own config file, never from a study's attrs alone. A real tiny run of the
user's own federation in SQLite, a copy whose pair study was tampered with (``os:system``), and
``dkd-tune worker`` / ``confirm``: refused in one line, no command run. The refusal of the stored
code alone runs as real processes (nothing of the model's is imported there); the cases with the
user's own config call the entry point, ``tuner.cli.main``, in this process (the same line and
exit code, without the seconds of imports a fresh interpreter costs)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import optuna
import pytest

from objectives import load_config
from tuner import TuneOptions, tune
from tuner.cli import main

STUDY = "own-test/0-1"


@pytest.fixture(scope="module")
def run_db(own_federation, tmp_path_factory) -> dict:
    """A finished two-trial pair run of the user's own federation (module:callable models)."""
    folder = tmp_path_factory.mktemp("stored-code")
    url = f"sqlite:///{folder / 'run.db'}"
    opts = TuneOptions(confirm=0, config=str(own_federation["config"]),
        bundles=str(folder / "bundles"), storage=url, pairs="0-1", trials=2, workers=1,
        pruner="none", progress="quiet",
    )  # fmt: skip
    tune(opts, say=lambda _m: None)
    return {"db": folder / "run.db", "bundles": folder / "bundles",
            "config": Path(own_federation["config"])}  # fmt: skip


def _tampered(run_db: dict, tmp_path: Path, marker: Path, federation_hash: str | None = None):
    """A copy of the run's database whose pair study's participant 0 is ``os:system`` touching
    ``marker`` (its checkpoint still a file that exists); optionally another stored hash."""
    copy = tmp_path / "copy.db"
    # SQLite's backup, not a file copy: the run's last commits may still be in its -wal file.
    with closing(sqlite3.connect(run_db["db"])) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    storage = optuna.storages.RDBStorage(f"sqlite:///{copy}")
    try:
        sid = storage.get_study_id_from_name(STUDY)
        config = storage.get_study_user_attrs(sid)["config"]
        participant = config["participants"][0]
        assert ":" in participant["model"]  # the fixture's own model: code the user named
        participant["model"] = "os:system"
        participant["kwargs"] = {"command": f"touch {marker}"}
        storage.set_study_user_attr(sid, "config", config)
        if federation_hash is not None:
            storage.set_study_user_attr(sid, "federation_hash", federation_hash)
    finally:
        storage.engine.dispose()
    return f"sqlite:///{copy}"


def _dkd(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``dkd-tune ARGV`` as a real process started in ``cwd``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "tuner", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _dkd_here(*argv: str, cwd: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture) -> subprocess.CompletedProcess:  # fmt: skip
    """``dkd-tune ARGV`` through the entry point in this process, working in ``cwd``."""
    monkeypatch.chdir(cwd)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["dkd-tune", *argv], code, out, err)


@pytest.mark.parametrize("command", [["worker"], ["confirm", "--repeats", "2"]])
def test_stored_code_model_is_refused_before_anything_is_imported(
    run_db, tmp_path, command, untouched
):
    marker = tmp_path / "MARKER"
    url = _tampered(run_db, tmp_path, marker)
    check = untouched(tmp_path / "copy.db")
    done = _dkd(*command, "--storage", url, "--bundles", str(run_db["bundles"]),
                "--progress", "quiet", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "os:system" in lines[0] and "--config FILE" in lines[0] and STUDY in lines[0]
    assert not marker.exists()
    check()  # the database byte for byte as it was


def test_worker_with_own_config_uses_it_not_the_stored_code(run_db, tmp_path, monkeypatch, capsys):
    """The tamper leaves the stored federation hash: the user's file gives it, so the worker
    runs with the user's participants (the run is done: nothing left to do) and runs nothing
    the database names."""
    marker = tmp_path / "MARKER"
    url = _tampered(run_db, tmp_path, marker)
    done = _dkd_here("worker", "--storage", url, "--bundles", str(run_db["bundles"]),
                     "--config", str(run_db["config"]), "--progress", "quiet", cwd=tmp_path,
                     monkeypatch=monkeypatch, capsys=capsys)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


@pytest.mark.parametrize("command", [["worker"], ["confirm", "--repeats", "2"]])
def test_own_config_of_another_federation_hash_is_refused(
    run_db, tmp_path, command, untouched, monkeypatch, capsys
):
    """Every study's stored hash is checked against ``--config`` before anything runs."""
    marker = tmp_path / "MARKER"
    url = _tampered(run_db, tmp_path, marker, federation_hash="0123456789abcdef")
    check = untouched(tmp_path / "copy.db")
    done = _dkd_here(*command, "--storage", url, "--bundles", str(run_db["bundles"]),
                     "--config", str(run_db["config"]), "--progress", "quiet", cwd=tmp_path,
                     monkeypatch=monkeypatch, capsys=capsys)  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    own = load_config(run_db["config"]).federation_hash
    assert STUDY in lines[0] and "0123456789abcdef" in lines[0] and own in lines[0]
    assert not marker.exists()
    check()
