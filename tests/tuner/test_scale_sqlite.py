"""SQLite on one machine, as a user runs it: ``dkd-tune --workers 4`` over 150 short trials,
interrupted with Ctrl-C once two thirds are done (SIGINT to the whole process group, as a terminal
sends it), then run again. Zero "database is locked" anywhere; the interrupted run exits 130 and
leaves no trial RUNNING; the rerun tops every study up to exactly its budget. (The rerun runs in
this process: a worker process costs seconds of imports, and four were tested already.)

The scenario runs once (module fixture); each test checks one promise of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import sqlalchemy
from optuna.trial import TrialState
from tuner_helpers import cli, finished, trials_of

from tuner import TuneOptions, tune

BUDGET = 25  # x 6 pairs of the tiny federation = 150 trials
WORKERS = 4
DEADLINE_S = 600  # a hung scenario fails instead of blocking the suite


@pytest.fixture(scope="module")
def sqlite_run(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite4') / 'run.db'}"
    args = cli(
        "--config", tiny["config"], "--bundles", tiny["bundles"], "--storage", url,
        "--pairs", "all", "--trials", str(BUDGET), "--workers", str(WORKERS),
        "--sampler", "random", "--pruner", "none", "--progress", "log", "--confirm", "0",
        "--set", "kd.eval_points=1",  # short trials: the test is about the database
        # The fixed strategy: the test needs the run to last its --trials (a race stops early).
        "--strategy", "fixed",
    )  # fmt: skip
    spawn = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    engine = sqlalchemy.create_engine(url)

    def count(sql: str) -> int:
        try:
            with engine.connect() as conn:
                return int(conn.exec_driver_sql(sql).scalar() or 0)
        except sqlalchemy.exc.OperationalError:  # no tables yet
            return 0

    # Its own process group, so that the test can Ctrl-C it and its workers as a terminal would.
    first = subprocess.Popen(args, start_new_session=True, **spawn)
    deadline = time.monotonic() + DEADLINE_S
    done = "SELECT count(*) FROM trials WHERE state = 'COMPLETE'"
    pids = "SELECT count(DISTINCT value_json) FROM trial_user_attributes WHERE key = 'worker_pid'"
    running = "SELECT count(*) FROM trials WHERE state = 'RUNNING'"
    # Two thirds of the way, once all four workers have run trials, and while at least two
    # trials are running (short trials: between two claims a Ctrl-C would cut none short).
    while count(done) < 6 * BUDGET * 2 // 3 or count(pids) < WORKERS or count(running) < 2:
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGINT)
    out, err = first.communicate(timeout=DEADLINE_S)
    names = [f"tiny/{a}-{b}" for a in range(4) for b in range(a + 1, 4)]
    after_interrupt = {name: trials_of(url, name) for name in names}
    engine.dispose()
    # --confirm 0: about the database under 4 workers, no confirmation runs; --strategy fixed:
    # the run above's (a study keeps the strategy it was run with).
    rerun = TuneOptions(confirm=0, strategy="fixed",
        config=tiny["config"], bundles=tiny["bundles"], storage=url, pairs="all",
        trials=BUDGET, sampler="random", pruner="none", progress="quiet",
        overrides=["kd.eval_points=1"],
    )  # fmt: skip
    second = tune(rerun, say=lambda _m: None)
    return {
        "url": url,
        "first": (first.returncode, out, err),
        "after_interrupt": after_interrupt,
        "second": second,
        "final": {name: trials_of(url, name) for name in after_interrupt},
    }


def test_four_workers_hundreds_of_trials_no_lock_failures(sqlite_run: dict) -> None:
    _code, out, err = sqlite_run["first"]
    assert "database is locked" not in out + err and "OperationalError" not in out + err
    assert sqlite_run["second"].finished > 0  # and it raised nothing
    pids = set()
    for name, trials in sqlite_run["final"].items():
        assert finished(trials) == BUDGET, name
        assert not [t for t in trials if t.state == TrialState.RUNNING], name
        reasons = [
            t.user_attrs.get("fail_reason", "")
            for t in trials
            if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")
        ]
        assert all("interrupt" in r.lower() for r in reasons), reasons  # the Ctrl-C's only
        pids |= {t.user_attrs["worker_pid"] for t in trials if "worker_pid" in t.user_attrs}
    assert len(pids) == WORKERS + 1  # four worker processes, then this one


def test_ctrl_c_stops_workers_marks_their_trials_failed_and_a_rerun_resumes(
    sqlite_run: dict,
) -> None:
    code, out, err = sqlite_run["first"]
    assert code == 130, err
    assert err.strip().splitlines()[-1].startswith("dkd-tune: interrupted")
    assert "Traceback" not in err
    interrupted = [
        t
        for trials in sqlite_run["after_interrupt"].values()
        for t in trials
        if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")
    ]
    assert interrupted, out[-4000:]  # some trials were cut short (seen once without: its log)
    for trials in sqlite_run["after_interrupt"].values():
        assert not [t for t in trials if t.state == TrialState.RUNNING]  # ...none left RUNNING
    assert all("interrupt" in t.user_attrs["fail_reason"].lower() for t in interrupted)
    # The rerun retried each interrupted configuration (a retry waits in the queue, first).
    for name, trials in sqlite_run["after_interrupt"].items():
        cut = {
            t.number
            for t in trials
            if t.state == TrialState.FAIL and t.params and not t.user_attrs.get("surplus")
        }
        retried = {t.user_attrs.get("retry_of") for t in sqlite_run["final"][name]}
        assert cut <= retried, name
