"""Real processes on one SQLite file: two runs started at the same moment, a pool of workers,
and a worker joining a run. Defaults must exist once and budgets must be exact."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState
from tuner_helpers import finished, trials_of

from tuner import TuneOptions, join, tune
from tuner.kinds.setup import record_run
from tuner.store.records import RunRecord
from tuner.store.storage import get_storage

# Imports first, then wait for the go file: both processes enter the tuner within a millisecond.
RACER = """
import os, sys, time
from tuner import TuneOptions, tune
config, bundles, url, folder, me = sys.argv[1:]
open(os.path.join(folder, "ready-" + me), "w").close()
while not os.path.exists(os.path.join(folder, "go")):
    time.sleep(0.001)
# confirm=0: the race is over creating the pair studies and their budget
tune(TuneOptions(confirm=0, config=config, bundles=bundles, storage=url, pairs="0-1,0-2", trials=5,
                 pruner="none", progress="quiet"), say=lambda _m: None)
"""


def test_two_processes_started_together(tiny, tmp_path: Path, backend_url: str) -> None:
    url = backend_url
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, tiny["config"], tiny["bundles"], url, str(tmp_path), me],
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("1", "2")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{me}").exists() for me in ("1", "2")):
        assert time.monotonic() < deadline, "racers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    pids = set()
    for name in ("tiny/0-1", "tiny/0-2"):
        trials = trials_of(url, name)
        defaults = [
            t for t in trials if "default" in t.user_attrs and not t.user_attrs.get("surplus")
        ]
        assert sorted(t.user_attrs["default"] for t in defaults) == ["a", "b"]
        assert all(t.state == TrialState.COMPLETE for t in defaults)
        assert min(t.number for t in defaults) == 0 and max(t.number for t in defaults) == 1
        assert finished(trials) == 5  # exactly the budget, although both processes worked on it
        real_failures = [
            t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")
        ]
        assert real_failures == []
        pids |= {t.user_attrs.get("worker_pid") for t in trials if t.state != TrialState.FAIL}
    assert pids == {p.pid for p in procs}  # both took trials


def test_pool_of_worker_processes(opts, backend_url: str) -> None:
    # About the pair phase on worker processes: the confirmation phase on the pool, on both
    # backends, is test_fixed_kinds_pool's and test_worker_joins_confirmation's (it would start
    # two more worker processes here, seconds of imports each).
    o = opts(pairs="0-1,0-2,1-3", trials=6, workers=2, storage=backend_url, confirm=0)
    summary = tune(o, say=lambda _m: None)
    assert summary.finished == 18
    pids = set()
    for name in summary.studies:
        trials = trials_of(o.storage, name)
        assert finished(trials) == 6
        pids |= {t.user_attrs["worker_pid"] for t in trials if "worker_pid" in t.user_attrs}
    assert os.getpid() not in pids  # the trials ran in worker processes, not here
    assert len(pids) == 2
    assert {r.device for r in summary.reports} == {"cpu"}


def test_worker_joins_a_recorded_run(opts, tiny) -> None:
    o = opts(pairs="0-1", trials=2)
    tune(o, say=lambda _m: None)
    # As if the run had been started with --trials 4 and is still going: a worker tops it up.
    storage = get_storage(o.storage)
    record_run(
        storage,
        storage.get_study_id_from_name("tiny/0-1"),
        RunRecord(budget=4, sampler="random", pruner="none", seed=0, retries=2),
    )
    joined = join(
        TuneOptions(storage=o.storage, bundles=tiny["bundles"], progress="quiet"),
        federation="tiny",
        say=lambda _m: None,
    )
    assert joined.finished == 2
    assert finished(trials_of(o.storage, "tiny/0-1")) == 4
