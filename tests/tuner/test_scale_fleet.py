"""Many machines' worth of workers on one PostgreSQL run, as real processes: a run started with
``dkd-tune`` and two ``dkd-tune worker`` processes started separately share 36 pair studies;
one worker is killed with SIGKILL in the middle of a trial. Every budget must still be exact, no
trial left RUNNING, the killed trial failed by a heartbeat check and queued again, and no process
may hold more than 2 connections while the studies run (pg_stat_activity, sampled throughout).

The scenario runs once (module fixture); each test checks one promise of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import sqlalchemy
from optuna.trial import TrialState
from tuner_helpers import bench_module, finished, trials_of

from tuner.store.storage import SERVER_CONNECTIONS
from tuner.worker.lifecycle import LOST

fleet_bench = bench_module("fleet")  # the PostgreSQL scenario (run_fleet) asserted on here
#: Trials of a tenth of a second on 36 pair studies: the run is about workers.
BUDGET = 3
PAIRS = 36


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A scratch PostgreSQL database for the module (skipped without a server, failed in CI)."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(fleet_bench.scratch_database(fleet_bench.ADMIN,
                                                                   "dkd_tune_fleet"))  # fmt: skip
        except sqlalchemy.exc.OperationalError as exc:
            if os.environ.get("DKD_TUNE_REQUIRE_POSTGRES") == "1":
                pytest.fail(f"PostgreSQL required but unreachable: {exc.orig}")
            pytest.skip("no PostgreSQL server: start one or set DKD_TUNE_POSTGRES_URL to run these")
        yield url


@pytest.fixture(scope="module")
def fleet(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = fleet_bench.run_fleet(pg_url, tmp_path_factory.mktemp("fleet"), trials=BUDGET)
    return {
        "run": run.outputs["run"],
        "worker": run.outputs["worker"],
        "sampler": run.sampler,
        "killed": run.killed,
        "pids": run.pids,
        "studies": {
            f"tiny9/{a}-{b}": trials_of(pg_url, f"tiny9/{a}-{b}")
            for a in range(9)
            for b in range(a + 1, 9)
        },
    }


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
    sampler = fleet["sampler"]
    assert sampler.samples > 10
    for name, pid in fleet["pids"].items():
        peak = sampler.peak(pid, "run")
        assert 1 <= peak <= SERVER_CONNECTIONS, (name, sampler.peaks)
