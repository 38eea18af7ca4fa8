"""Compare and confirmation trials on the worker pool, with the guarantees pair trials have: two
workers on SQLite, or a run joined by ``dkd-tune worker`` on PostgreSQL; a worker SIGKILLed in
the middle of a trial costs that trial (failed by a heartbeat check and retried), Ctrl-C leaves
nothing RUNNING, and a rerun adds only what is missing. Also: the database going away in the
middle of a run ends it with one line and exit 1."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from neighbourhood_helpers import make_tiny2
from optuna.trial import TrialState
from tuner_helpers import cli

from tuner import TuneOptions, tune
from tuner.cli import main
from tuner.read.results import recommendations
from tuner.run.compare import CompareOptions, run_compare
from tuner.run.confirm import confirm

DEADLINE_S = 300
HEARTBEAT = ["--heartbeat-interval", "1", "--heartbeat-grace", "3"]
SPAWN = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}


#: The test's own engine per server database, kept while the module runs: the steps poll every
#: 20 ms, and each new server connection would start a server process (a dropped database's
#: connections are ended by its DROP ... WITH (FORCE); pool_pre_ping replaces one ended so).
_SERVER_ENGINES: dict[str, sqlalchemy.Engine] = {}


@pytest.fixture(scope="module", autouse=True)
def _dispose_server_engines() -> Iterator[None]:
    yield
    for engine in _SERVER_ENGINES.values():
        engine.dispose()
    _SERVER_ENGINES.clear()


def _rows(url: str, sql: str) -> list[tuple]:
    """The rows of ``sql`` (none where the tables do not exist yet). SQLite: a fresh engine each
    time, so that the test holds no connection to the run's file between polls."""
    server = not url.startswith("sqlite")
    if server:
        engine = _SERVER_ENGINES.get(url) or _SERVER_ENGINES.setdefault(
            url, sqlalchemy.create_engine(url, pool_pre_ping=True, pool_size=1)
        )
    else:
        engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):  # no tables yet
        return []
    finally:
        if not server:
            engine.dispose()


def _running_by(url: str, pids: set[int]) -> int | None:
    """A RUNNING trial's id whose worker is one of ``pids``, if there is one."""
    rows = _rows(
        url,
        "SELECT t.trial_id, a.value_json FROM trials t JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'worker_pid' WHERE t.state = 'RUNNING'",
    )
    return next((tid for tid, pid in rows if int(pid) in pids), None)


def _state(url: str, trial_id: int) -> str:
    return _rows(url, f"SELECT state FROM trials WHERE trial_id = {int(trial_id)}")[0][0]


def _wait(what: str, predicate, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        for p in procs:
            assert p.poll() is None, (what, p.communicate())
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _children(pid: int) -> set[int]:
    """The child processes of ``pid``, whichever of its threads started them."""
    return {int(c) for path in Path(f"/proc/{pid}/task").glob("*/children")
            for c in path.read_text().split()}  # fmt: skip


def _caught(url: str, pids: set[int], procs: list[subprocess.Popen]) -> int:
    """The id of a trial that one of ``pids`` is running, once there is one."""
    box: dict = {}

    def caught() -> bool:
        box["trial"] = _running_by(url, pids)
        return box["trial"] is not None

    _wait("a trial running in a worker", caught, procs)
    return box["trial"]


def _pid_of(url: str, trial_id: int) -> int:
    rows = _rows(url, f"SELECT value_json FROM trial_user_attributes WHERE trial_id = "
                      f"{int(trial_id)} AND key = 'worker_pid'")  # fmt: skip
    return int(rows[0][0])


def _kill_then_interrupt(url: str, args: list[str], joined: bool, federation: str) -> dict:
    """Start the run; SIGKILL a worker in the middle of a trial; Ctrl-C a live worker in the
    middle of another. SQLite: two worker processes of the run, one killed, then Ctrl-C to the
    run. PostgreSQL: the run (one in-process worker) killed, then ``dkd-tune worker`` joins it
    and is interrupted. Each step waits for a RUNNING trial, so no step races the work's end."""
    run = subprocess.Popen(
        cli(*args, "--storage", url, "--workers", "1" if joined else "2", *HEARTBEAT),
        start_new_session=True, **SPAWN,
    )  # fmt: skip
    if joined:
        killed = _caught(url, {run.pid}, [run])
        os.kill(run.pid, signal.SIGKILL)
        run.communicate(timeout=DEADLINE_S)
        live = subprocess.Popen(
            cli("worker", "--storage", url, "--federation", federation, "--bundles", args[-1],
                "--progress", "quiet"),
            start_new_session=True, **SPAWN,
        )  # fmt: skip
        _caught(url, {live.pid}, [live])
    else:
        _wait("two worker processes", lambda: len(_children(run.pid)) >= 2, [run])
        children = _children(run.pid)
        killed = _caught(url, children, [run])
        os.kill(_pid_of(url, killed), signal.SIGKILL)
        _caught(url, children - {_pid_of(url, killed)}, [run])
        live = run
    os.killpg(live.pid, signal.SIGINT)
    _out, err = live.communicate(timeout=DEADLINE_S)
    running = _rows(url, f"SELECT count(*) FROM trials WHERE state = 'RUNNING' "
                         f"AND trial_id != {killed}")[0][0]  # fmt: skip
    return {"code": live.returncode, "err": err, "running": running, "killed": killed}


def _check_scenario(result: dict) -> None:
    assert result["code"] == 130, result["err"]
    assert "Traceback" not in result["err"]
    assert result["running"] == 0  # Ctrl-C left nothing RUNNING (but the killed worker's trial)


def _check_killed(url: str, result: dict) -> None:
    """After the rerun: the killed worker's trial was failed by a heartbeat check."""
    assert _state(url, result["killed"]) == "FAIL"
    reason = _rows(url, f"SELECT value_json FROM trial_user_attributes WHERE trial_id = "
                        f"{result['killed']} AND key = 'fail_reason'")  # fmt: skip
    assert reason and "heartbeat lost" in reason[0][0]


def test_compare_on_the_pool_survives_a_kill_and_ctrl_c(backend_url: str, tmp_path) -> None:
    tiny2 = make_tiny2(tmp_path)
    joined = backend_url.startswith("postgresql")
    args = ["compare", "--config", tiny2["config"], "--seeds", "2",
            "--bundles", tiny2["bundles"]]  # fmt: skip
    result = _kill_then_interrupt(backend_url, args, joined, "tiny2")
    _check_scenario(result)
    opts = CompareOptions(
        config=tiny2["config"], storage=backend_url, bundles=tiny2["bundles"], seeds=2,
        heartbeat_interval=1, heartbeat_grace=3,
    )  # fmt: skip
    cells = run_compare(opts, say=lambda _m: None)
    _check_killed(backend_url, result)
    assert len(cells) == 20 and all(c.n == 2 for c in cells)  # every cell x seed, once
    storage = optuna.storages.RDBStorage(backend_url)
    try:
        for name in ("tiny2/compare", "tiny2-iid/compare"):
            trials = optuna.load_study(study_name=name, storage=storage).get_trials()
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            keys = [(t.params["divergence"], t.params["aggregation"], t.params["seed"])
                    for t in done]  # fmt: skip
            assert len(keys) == len(set(keys)) == 20, name
            assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    finally:
        storage.engine.dispose()


def test_confirm_on_the_pool_survives_a_kill_and_ctrl_c(tiny, backend_url: str) -> None:
    base = TuneOptions(confirm=0,  # the confirmation is this scenario's own dkd-tune confirm
        config=tiny["config"], bundles=tiny["bundles"], storage=backend_url, pairs="0-1,1-3,2-3",
        trials=3, sampler="random", pruner="none", progress="quiet",
        overrides=["kd.epochs=2"],  # a few seconds of work: steps wait for RUNNING trials
    )  # fmt: skip
    tune(base, say=lambda _m: None)
    joined = backend_url.startswith("postgresql")
    args = ["confirm", "--repeats", "3", "--bundles", tiny["bundles"]]
    result = _kill_then_interrupt(backend_url, args, joined, "tiny")
    _check_scenario(result)
    outcomes = confirm(
        backend_url, repeats=3, bundles=tiny["bundles"], say=lambda _m: None,
        heartbeat_interval=1, heartbeat_grace=3,
    )  # fmt: skip
    assert [o.state for o in outcomes] == ["confirmed"] * 3
    _check_killed(backend_url, result)
    storage = optuna.storages.RDBStorage(backend_url)
    try:
        for o in outcomes:
            record = o.record
            study = optuna.load_study(study_name=f"{o.study}/confirm", storage=storage)
            trials = study.get_trials()
            done = [(t.params["candidate"], t.params["seed"]) for t in trials
                    if t.state == TrialState.COMPLETE]  # fmt: skip
            assert len(done) == len(set(done))  # no run twice
            assert not [t for t in trials if t.state == TrialState.RUNNING]
            pair = optuna.load_study(study_name=o.study, storage=storage)
            stored = recommendations(storage, [s for s in storage.get_all_studies()
                                               if s.study_name == o.study])  # fmt: skip
            assert stored[pair.study_name] == record and len(record.best.gain) == 3
    finally:
        storage.engine.dispose()


def test_the_database_going_away_mid_run_is_one_line_and_exit_1(
    tiny, backend_url: str, capsys: pytest.CaptureFixture
) -> None:
    if not backend_url.startswith("postgresql"):
        pytest.skip("a server that stops answering: PostgreSQL")
    url = sqlalchemy.engine.make_url(backend_url)
    argv = ["--config", tiny["config"], "--bundles", tiny["bundles"], "--storage", backend_url,
            "--pairs", "0-1", "--trials", "16", "--workers", "1", "--sampler", "random",
            "--pruner", "none", "--progress", "quiet", "--confirm", "0", *HEARTBEAT]  # fmt: skip
    run = subprocess.Popen(cli(*argv), start_new_session=True, **SPAWN)
    _wait("trials", lambda: _rows(
        backend_url, "SELECT count(*) FROM trials WHERE state = 'COMPLETE'") not in ([], [(0,)]),
        [run])  # fmt: skip
    admin = sqlalchemy.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" WITH ALLOW_CONNECTIONS false')
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{url.database}'"
        )
    _out, err = run.communicate(timeout=DEADLINE_S)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" WITH ALLOW_CONNECTIONS true')
    admin.dispose()
    assert run.returncode == 1, err
    assert err.count("\n") == 1 and "stopped answering" in err and "rerun" in err, err
    # Back again: the same command finishes the study (the trial cut off is failed, retried),
    # through the entry point in this process (the real process's exit code is checked above).
    assert main(argv) == 0, capsys.readouterr().err
    states = _rows(backend_url, "SELECT state, count(*) FROM trials GROUP BY state")
    counts = {str(s).split(".")[-1]: n for s, n in states}
    assert counts.get("COMPLETE") == 16 and not counts.get("RUNNING")
