"""Many machines' worth of workers on one PostgreSQL run, as real processes: a run started with
``dkd-tune`` and two ``dkd-tune worker`` processes started separately share 36 pair studies;
one worker is killed with SIGKILL in the middle of a trial. Every budget must still be exact, no
trial left RUNNING, the killed trial failed by a heartbeat check and queued again, and no process
may hold more than 2 connections while the studies run (pg_stat_activity, sampled throughout).

The scenario runs once (module fixture); each test checks one promise of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from optuna.trial import TrialState
from tuner_helpers import cli, finished, trials_of

from objectives import load_config, prepare_federation
from tuner.store.storage import SERVER_CONNECTIONS
from tuner.worker.lifecycle import LOST

PG_ADMIN = os.environ.get(
    "DKD_TUNE_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
#: Nine participants: 36 pair studies. Trials of a tenth of a second: the run is about workers.
TINY9 = """\
name = "tiny9"
[data]
dataset = "synthetic"
train_size = 1500
test_size = 300
[federation]
participants = 9
public_size = 300
min_size = 30
[pretrain]
epochs = 1
batch_size = 32
[kd]
batch_size = 100
eval_points = 1
"""
BUDGET = 3
PAIRS = 36
HEARTBEAT = ["--heartbeat-interval", "1", "--heartbeat-grace", "3"]
DEADLINE_S = 600  # a hung scenario fails instead of blocking the suite


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A scratch PostgreSQL database for the module (skipped without a server, failed in CI)."""
    admin = sqlalchemy.create_engine(
        PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        conn = admin.connect()
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("DKD_TUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {exc.orig}")
        pytest.skip("no PostgreSQL server: start one or set DKD_TUNE_POSTGRES_URL to run these")
    name = f"dkd_tune_fleet_{uuid.uuid4().hex[:12]}"
    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sqlalchemy.engine.make_url(PG_ADMIN).set(database=name).render_as_string(False)
    finally:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        admin.dispose()


class ConnectionSampler:
    """Peak connections per client process (application_name) to one database, in two phases:
    set-up (until every study is ready) and run."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.phase = "setup"
        self.peaks: dict[str, dict[str, int]] = {"setup": {}, "run": {}}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()

    def _loop(self) -> None:
        query = sqlalchemy.text(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = :db GROUP BY application_name"
        )
        with self._engine.connect() as conn:
            while not self._stop.is_set():
                peaks = self.peaks[self.phase]
                for app, n in conn.execute(query, {"db": self.database}):
                    peaks[app] = max(peaks.get(app, 0), n)
                self.samples += 1
                self._stop.wait(0.02)

    def peak(self, pid: int, phase: str) -> int:
        mine = [n for app, n in self.peaks[phase].items() if app.endswith(f":{pid}")]
        return max(mine, default=0)


def _scalar(engine: sqlalchemy.Engine, sql: str) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar() or 0)
    except sqlalchemy.exc.ProgrammingError:  # optuna's tables do not exist yet
        return 0


def _wait(predicate, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for p in procs:
            assert p.poll() is None, (what, p.args, p.communicate())
        time.sleep(0.02)


@pytest.fixture(scope="module")
def fleet(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("fleet")
    config = root / "tiny9.toml"
    config.write_text(TINY9)
    bundles = root / "bundles"
    prepare_federation(load_config(config), directory=bundles)
    common = ["--storage", pg_url, "--bundles", str(bundles), "--progress", "quiet"]
    engine = sqlalchemy.create_engine(pg_url)
    out: dict = {"url": pg_url}

    def run_ready() -> bool:  # _run writes worker_settings into every study just before work
        sql = "SELECT count(*) FROM study_user_attributes WHERE key = 'worker_settings'"
        return _scalar(engine, sql) == PAIRS

    def trials_by(pid: int, states: str) -> list[int]:
        sql = (
            "SELECT t.trial_id FROM trials t JOIN trial_user_attributes a ON a.trial_id = "
            f"t.trial_id AND a.key = 'worker_pid' AND a.value_json = '{pid}' "
            f"WHERE t.state IN ({states})"
        )
        with engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql(sql)]

    # Three "machines" on the test machine's cores: one torch thread each, not one per core.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    spawn = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    with ConnectionSampler(sqlalchemy.engine.make_url(pg_url).database) as sampler:
        run = subprocess.Popen(
            cli("--config", str(config), *common, "--pairs", "all", "--trials", str(BUDGET),
                "--sampler", "random", "--pruner", "none", "--confirm", "0", *HEARTBEAT),
            **spawn,
        )  # fmt: skip
        _wait(run_ready, "the run to set up its studies", [run])
        sampler.phase = "run"
        workers = [subprocess.Popen(cli("worker", *common), **spawn) for _ in range(2)]
        victim = workers[0]
        _wait(
            lambda: len(trials_by(victim.pid, "'COMPLETE', 'PRUNED'")) >= 2,
            "the victim's first trials",
            [run, *workers],
        )
        while True:  # stop it, and kill it only while one of its trials is RUNNING
            victim.send_signal(signal.SIGSTOP)
            killed = trials_by(victim.pid, "'RUNNING'")
            if killed:
                victim.kill()
                out["kill_time"] = time.time()
                break
            victim.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        victim.communicate()
        for name, p in (("run", run), ("worker", workers[1])):
            stdout, stderr = p.communicate(timeout=DEADLINE_S)
            out[name] = (p.returncode, stdout, stderr)
    engine.dispose()
    out.update(
        sampler=sampler,
        killed=killed,
        pids={"run": run.pid, "victim": victim.pid, "worker": workers[1].pid},
        studies={
            f"tiny9/{a}-{b}": trials_of(pg_url, f"tiny9/{a}-{b}")
            for a in range(9)
            for b in range(a + 1, 9)
        },
    )
    return out


def test_workers_started_separately_share_the_budget_exactly(fleet: dict) -> None:
    for name in ("run", "worker"):
        code, _stdout, stderr = fleet[name]
        assert code == 0, (name, stderr)
    assert len(fleet["studies"]) == PAIRS
    took: set[int] = set()
    for name, trials in fleet["studies"].items():
        assert finished(trials) == BUDGET, name  # exactly: the run and both workers counted
        assert not [t for t in trials if t.state == TrialState.RUNNING], name
        took |= {t.user_attrs.get("worker_pid") for t in trials if t.state != TrialState.FAIL}
    assert set(fleet["pids"].values()) <= took  # each of the three processes ran trials


def test_a_worker_killed_mid_trial_is_failed_by_heartbeat_and_retried(fleet: dict) -> None:
    victim, killed = fleet["pids"]["victim"], set(fleet["killed"])
    assert killed
    failed = []
    for trials in fleet["studies"].values():
        for dead in (t for t in trials if t._trial_id in killed):
            assert dead.state == TrialState.FAIL
            assert dead.user_attrs["fail_reason"].startswith(LOST)
            assert f"pid {victim}" in dead.user_attrs["fail_reason"]
            retry = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
            assert len(retry) == 1 and retry[0].user_attrs["attempt"] == 2
        failed += [t._trial_id for t in trials if t.state == TrialState.FAIL]
    # Nothing else failed (surplus claims aside): the kill is the only loss, and no lock or
    # connection error reached a trial.
    surplus = {
        t._trial_id for ts in fleet["studies"].values() for t in ts if t.user_attrs.get("surplus")
    }
    assert sorted(set(failed) - surplus) == sorted(killed)


def test_at_most_two_connections_per_worker_process(fleet: dict) -> None:
    sampler: ConnectionSampler = fleet["sampler"]
    assert sampler.samples > 10
    for name, pid in fleet["pids"].items():
        peak = sampler.peak(pid, "run")
        assert 1 <= peak <= SERVER_CONNECTIONS, (name, sampler.peaks)
