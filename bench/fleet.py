"""Workers that share a run, measured: what a SIGKILL costs and how many connections they hold.

    .venv/bin/python bench/fleet.py postgres  # the run + 2 `dkd-tune worker`, one killed mid-trial
    .venv/bin/python bench/fleet.py sqlite    # one run, 4 worker processes, 300 short trials

``postgres`` starts ``dkd-tune --pairs all`` on a 9-participant synthetic federation (36 pair
studies) in a scratch database, then two ``dkd-tune worker`` processes; once the first worker
has finished a few trials it is killed with SIGKILL while one of its trials is RUNNING. It
prints the trials lost, the seconds from the kill until a heartbeat check failed that trial and
until its retry started, pg_stat_activity's peak connections per process (sampled every 20 ms,
during set-up and while the studies run), and whether every budget came out exact.

``sqlite`` runs ``dkd-tune --workers 4`` on one SQLite file and counts "database is locked"
anywhere (worker output, failed trials), trials per study and trials left RUNNING.

Needs the PostgreSQL server of the tests (``$DKD_TUNE_POSTGRES_URL``, default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) for ``postgres``. Prints; asserts nothing.
The ``postgres`` scenario (:func:`run_fleet`) is also the one tests/tuner/test_scale_fleet.py
asserts on: that test loads this file, so the harness exists once and what is measured here is
what the suite checks.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from objectives import load_config, prepare_federation  # noqa: E402

ADMIN = os.environ.get(
    "DKD_TUNE_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
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
eval_points = 2
eval_subset = 200
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tuner", *args]


def federation(folder: Path) -> tuple[Path, Path]:
    config = folder / "tiny9.toml"
    config.write_text(TINY9)
    bundles = folder / "bundles"
    prepare_federation(load_config(config), directory=bundles)
    return config, bundles


def studies(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return {
            s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials()
            for s in storage.get_all_studies()
        }
    finally:
        storage.engine.dispose()


def budget_report(url: str, budget: int) -> tuple[int, int, int, list]:
    """(studies, studies with exactly the budget, trials left RUNNING, failed trials)."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    by_study = studies(url)
    exact = sum(sum(t.state in done for t in ts) == budget for ts in by_study.values())
    running = sum(
        t.state == optuna.trial.TrialState.RUNNING for ts in by_study.values() for t in ts
    )
    failed = [
        t
        for ts in by_study.values()
        for t in ts
        if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("surplus")
    ]
    return len(by_study), exact, running, failed


# The PostgreSQL scenario, shared with tests/tuner/test_scale_fleet.py (which loads this file):
# the suite asserts on the very run this benchmark measures.


@contextmanager
def scratch_database(admin: str, prefix: str) -> Iterator[str]:
    """The URL of a fresh database on the server of ``admin``, dropped after the block. Raises
    sqlalchemy's OperationalError at once when no server answers."""
    engine = sqlalchemy.create_engine(
        admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        conn = engine.connect()
    except sqlalchemy.exc.OperationalError:
        engine.dispose()
        raise
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sqlalchemy.engine.make_url(admin).set(database=name).render_as_string(False)
    finally:
        # FORCE: a killed worker's connection may linger until the server notices.
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        engine.dispose()


class ConnectionSampler:
    """Peak connections per client process (application_name) to one database, sampled every
    20 ms in two phases: set-up (until every study is ready) and run."""

    def __init__(self, url: str) -> None:
        self.database = sqlalchemy.engine.make_url(url).database
        self.phase = "setup"
        self.peaks: dict[str, dict[str, int]] = {"setup": {}, "run": {}}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")

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


@dataclass
class Fleet:
    """What the scenario left: each process's pid, the run's and the surviving worker's exit code
    and output, the trial ids the victim was running when it was killed, and when."""

    url: str
    pids: dict[str, int]  # run, victim, worker
    outputs: dict[str, tuple[int, str, str]]  # run, worker: (exit code, stdout, stderr)
    killed: list[int]
    kill_time: datetime.datetime
    sampler: ConnectionSampler
    setup_s: float
    run_s: float


def _scalar(engine: sqlalchemy.Engine, sql: str) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(sql).scalar() or 0)
    except sqlalchemy.exc.ProgrammingError:  # optuna's tables do not exist yet
        return 0


def _trials_by(engine: sqlalchemy.Engine, pid: int, states: str) -> list[int]:
    sql = (
        "SELECT t.trial_id FROM trials t JOIN trial_user_attributes a ON a.trial_id = "
        f"t.trial_id AND a.key = 'worker_pid' AND a.value_json = '{pid}' "
        f"WHERE t.state IN ({states})"
    )
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(sql)]


def _wait(predicate, what: str, procs: list[subprocess.Popen], deadline: float) -> None:
    """Until ``predicate()``; fails at ``deadline`` or when one of ``procs`` has ended."""
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for p in procs:
            assert p.poll() is None, (what, p.args, p.communicate())
        time.sleep(0.02)


def run_fleet(
    url: str,
    folder: Path,
    *,
    trials: int,
    interval: float = 1.0,
    grace: float = 3.0,
    victim_after: int = 2,
    deadline_s: float = 600.0,
) -> Fleet:
    """``dkd-tune --pairs all`` on :data:`TINY9` (36 pair studies) in ``url``, then two
    ``dkd-tune worker`` processes (one torch thread each: three "machines" on this machine's
    cores); once the first worker has finished ``victim_after`` trials it is killed with SIGKILL
    while one of its trials is RUNNING. Waits for the others to end (a hung run fails at
    ``deadline_s``)."""
    config, bundles = federation(folder)
    common = ["--storage", url, "--bundles", str(bundles), "--progress", "quiet"]
    beat = ["--heartbeat-interval", str(interval), "--heartbeat-grace", str(grace)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    spawn = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + deadline_s
    # The run writes worker_settings into every study just before its workers start.
    settings = "SELECT count(*) FROM study_user_attributes WHERE key = 'worker_settings'"
    try:
        with ConnectionSampler(url) as sampler:
            started = time.monotonic()
            run = subprocess.Popen(
                cli("--config", str(config), *common, "--pairs", "all", "--trials", str(trials),
                    "--sampler", "random", "--pruner", "none", "--confirm", "0", *beat),
                **spawn,
            )  # fmt: skip
            _wait(lambda: _scalar(engine, settings) == 36, "the run to set up its studies", [run],
                  deadline)  # fmt: skip
            ready = time.monotonic()
            sampler.phase = "run"
            workers = [subprocess.Popen(cli("worker", *common), **spawn) for _ in range(2)]
            victim = workers[0]
            done = "'COMPLETE', 'PRUNED'"
            _wait(lambda: len(_trials_by(engine, victim.pid, done)) >= victim_after,
                  "the victim's first trials", [run, *workers], deadline)  # fmt: skip
            while True:  # stop it, and kill it only while one of its trials is RUNNING
                victim.send_signal(signal.SIGSTOP)
                killed = _trials_by(engine, victim.pid, "'RUNNING'")
                if killed:
                    victim.kill()
                    kill_time = datetime.datetime.now()
                    break
                victim.send_signal(signal.SIGCONT)
                time.sleep(0.01)
            victim.communicate()
            outputs = {}
            for name, p in (("run", run), ("worker", workers[1])):
                stdout, stderr = p.communicate(timeout=max(deadline - time.monotonic(), 1))
                outputs[name] = (p.returncode, stdout, stderr)
            ended = time.monotonic()
    finally:
        engine.dispose()
    pids = {"run": run.pid, "victim": victim.pid, "worker": workers[1].pid}
    return Fleet(url, pids, outputs, killed, kill_time, sampler, ready - started, ended - ready)


def postgres(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder, \
            scratch_database(args.admin, "dkd_tune_bench") as url:  # fmt: skip
        fleet = run_fleet(url, Path(folder), trials=args.trials, interval=args.interval,
                          grace=args.grace, victim_after=args.victim_after)  # fmt: skip
        by_study = studies(url)
        codes = [fleet.outputs[p][0] for p in ("run", "worker")]
        print(f"36 pair studies, budget {args.trials}, heartbeat {args.interval}/{args.grace}s")
        print(f"exit codes of the run and the surviving worker: {codes}")
        print(f"set-up {fleet.setup_s:.1f}s, run {fleet.run_s:.1f}s")
        for ts in by_study.values():
            for dead in (t for t in ts if t._trial_id in fleet.killed):
                retry = [t for t in ts if t.user_attrs.get("retry_of") == dead.number]
                failed_after = (dead.datetime_complete - fleet.kill_time).total_seconds()
                retried = (
                    f"{(retry[0].datetime_start - fleet.kill_time).total_seconds():.1f}s"
                    if retry and retry[0].datetime_start
                    else "not started (budget met)"
                )
                print(
                    f"killed trial {dead.number}: FAIL {failed_after:.1f}s after the kill "
                    f"({dead.user_attrs.get('fail_reason')}); retry started after {retried}"
                )
        n, exact, running, failed = budget_report(url, args.trials)
        print(f"studies with exactly {args.trials} finished trials: {exact}/{n}")
        print(f"trials left RUNNING: {running}")
        print(f"failed trials: {len(failed)} (killed: {len(fleet.killed)})")
        labels = {"run": "run", "victim": "worker (killed)", "worker": "worker"}
        for key, pid in fleet.pids.items():
            setup, during = (fleet.sampler.peak(pid, p) for p in ("setup", "run"))
            mine = [t for ts in by_study.values() for t in ts
                    if t.user_attrs.get("worker_pid") == pid]  # fmt: skip
            print(
                f"{labels[key]} (pid {pid}): {len(mine)} trials; peak connections: set-up "
                f"{setup}, while the studies run {during}"
            )


def sqlite(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config, bundles = federation(Path(folder))
        url = f"sqlite:///{Path(folder) / 'fleet.db'}"
        started = time.monotonic()
        done = subprocess.run(
            cli("--config", str(config), "--bundles", str(bundles), "--storage", url,
                "--pairs", args.pairs, "--trials", str(args.trials), "--workers",
                str(args.workers), "--sampler", "random", "--pruner", "none", "--progress", "log"),
            capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.monotonic() - started
        n, exact, running, failed = budget_report(url, args.trials)
        output = done.stdout + done.stderr
        locked = output.count("database is locked") + sum(
            "locked" in str(t.user_attrs.get("fail_reason", "")) for t in failed
        )
        print(f"{args.workers} workers, {n} studies x {args.trials} trials, exit {done.returncode}")
        print(
            f"{n * args.trials} trials in {seconds:.1f}s ({n * args.trials / seconds * 60:.0f}/min)"
        )
        print(f'"database is locked": {locked}; failed trials: {len(failed)}')
        print(f"studies with exactly {args.trials} finished trials: {exact}/{n}")
        print(f"trials left RUNNING: {running}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    pg = sub.add_parser("postgres")
    pg.add_argument("--admin", default=ADMIN)
    pg.add_argument("--trials", type=int, default=4)
    pg.add_argument("--interval", type=float, default=1)
    pg.add_argument("--grace", type=float, default=3)
    pg.add_argument("--victim-after", type=int, default=3, help="trials before the kill")
    lite = sub.add_parser("sqlite")
    lite.add_argument("--workers", type=int, default=4)
    lite.add_argument("--pairs", default="all")
    lite.add_argument("--trials", type=int, default=9)  # 36 pairs x 9 = 324 trials
    args = parser.parse_args()
    postgres(args) if args.what == "postgres" else sqlite(args)


if __name__ == "__main__":
    main()
