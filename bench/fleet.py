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


def postgres(args: argparse.Namespace) -> None:
    admin = sqlalchemy.create_engine(args.admin, isolation_level="AUTOCOMMIT")
    name = f"dkd_tune_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sqlalchemy.engine.make_url(args.admin).set(database=name).render_as_string(False)
    peaks: dict[str, dict[str, int]] = {"setup": {}, "run": {}}
    phase = ["setup"]
    stop = threading.Event()

    def sample() -> None:
        query = sqlalchemy.text(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = :db "
            "GROUP BY application_name"
        )
        with admin.connect() as conn:
            while not stop.is_set():
                for app, n in conn.execute(query, {"db": name}):
                    peaks[phase[0]][app] = max(peaks[phase[0]].get(app, 0), n)
                stop.wait(0.02)

    engine = sqlalchemy.create_engine(url)

    def scalar(sql: str) -> int:
        try:
            with engine.connect() as conn:
                return int(conn.exec_driver_sql(sql).scalar() or 0)
        except sqlalchemy.exc.ProgrammingError:
            return 0

    def trials_by(pid: int, states: str) -> list[int]:
        sql = (
            "SELECT t.trial_id FROM trials t JOIN trial_user_attributes a ON a.trial_id = "
            f"t.trial_id AND a.key = 'worker_pid' AND a.value_json = '{pid}' "
            f"WHERE t.state IN ({states})"
        )
        with engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql(sql)]

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        with tempfile.TemporaryDirectory() as folder:
            config, bundles = federation(Path(folder))
            common = ["--storage", url, "--bundles", str(bundles), "--progress", "quiet"]
            beat = [
                "--heartbeat-interval",
                str(args.interval),
                "--heartbeat-grace",
                str(args.grace),
            ]
            # Three "machines" on this machine's cores: one torch thread each.
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            sampler.start()
            started = time.monotonic()
            run = subprocess.Popen(
                cli("--config", str(config), *common, "--pairs", "all", "--trials",
                    str(args.trials), "--sampler", "random", "--pruner", "none", *beat),
                stdout=subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
            sql = "SELECT count(*) FROM study_user_attributes WHERE key = 'worker_settings'"
            while scalar(sql) < 36:
                time.sleep(0.02)
            ready = time.monotonic()
            phase[0] = "run"
            workers = [
                subprocess.Popen(cli("worker", *common), stdout=subprocess.DEVNULL, env=env)
                for _ in range(2)
            ]
            victim = workers[0]
            while len(trials_by(victim.pid, "'COMPLETE', 'PRUNED'")) < 3:
                time.sleep(0.02)
            while True:
                victim.send_signal(signal.SIGSTOP)
                killed = trials_by(victim.pid, "'RUNNING'")
                if killed:
                    victim.kill()
                    kill_time = datetime.datetime.now()
                    break
                victim.send_signal(signal.SIGCONT)
                time.sleep(0.01)
            victim.wait()
            codes = [run.wait(), workers[1].wait()]
            ended = time.monotonic()
            stop.set()
            sampler.join()
            by_study = studies(url)
            print(f"36 pair studies, budget {args.trials}, heartbeat {args.interval}/{args.grace}s")
            print(f"exit codes of the run and the surviving worker: {codes}")
            print(f"set-up {ready - started:.1f}s, run {ended - ready:.1f}s")
            for ts in by_study.values():
                for dead in (t for t in ts if t._trial_id in killed):
                    retry = [t for t in ts if t.user_attrs.get("retry_of") == dead.number]
                    failed_after = (dead.datetime_complete - kill_time).total_seconds()
                    retried = (
                        f"{(retry[0].datetime_start - kill_time).total_seconds():.1f}s"
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
            print(f"failed trials: {len(failed)} (killed: {len(killed)})")
            pids = {"run": run.pid, "worker (killed)": victim.pid, "worker": workers[1].pid}
            for label, pid in pids.items():
                setup, during = (
                    max((v for k, v in peaks[p].items() if k.endswith(f":{pid}")), default=0)
                    for p in ("setup", "run")
                )
                mine = [t for ts in by_study.values() for t in ts
                        if t.user_attrs.get("worker_pid") == pid]  # fmt: skip
                print(
                    f"{label} (pid {pid}): {len(mine)} trials; peak connections: set-up {setup}, "
                    f"while the studies run {during}"
                )
    finally:
        stop.set()
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


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
    lite = sub.add_parser("sqlite")
    lite.add_argument("--workers", type=int, default=4)
    lite.add_argument("--pairs", default="all")
    lite.add_argument("--trials", type=int, default=9)  # 36 pairs x 9 = 324 trials
    args = parser.parse_args()
    postgres(args) if args.what == "postgres" else sqlite(args)


if __name__ == "__main__":
    main()
