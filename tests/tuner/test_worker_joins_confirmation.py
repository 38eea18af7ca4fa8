"""A ``dkd-tune worker`` that joins a pair run while its studies are tuned follows the run into
its confirmation, as the process that started it does, instead of leaving the confirmation to
that process alone: the run as a real process, the worker through the CLI's entry point in this
process (what it shares with the run is the SQLite file, not a process: a second interpreter
would add seconds of imports and nothing this test checks), every confirmation run once."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState
from tuner_helpers import cli

from tuner.cli import main
from tuner.read.results import pair_studies, recommendations
from tuner.store.records import PLAN_ATTR

PAIRS = ("0-1", "0-2", "1-2")
#: Rounds long enough (~0.5 s) that the confirmation outlasts the worker's look for it.
SLOW = ["--set", "kd.epochs=4"]


def test_a_joining_worker_serves_the_confirmation_too(tiny, tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    common = ["--bundles", tiny["bundles"], "--storage", url]
    log = (tmp_path / "starter.log").open("w+")
    args = cli("--config", tiny["config"], *common, "--pairs", ",".join(PAIRS), "--trials", "4",
               "--progress", "log", *SLOW)  # fmt: skip
    starter = subprocess.Popen(args, stdout=log, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # The first trial's line: every study is set up and its run recorded (the headline comes
    # before the set-up; a worker joining then, in this process, finds no run yet).
    while "tiny/" not in Path(log.name).read_text():
        assert starter.poll() is None and time.monotonic() < deadline, starter.communicate()
        time.sleep(0.1)
    code = main(["worker", *common, "--progress", "log"])
    w_out, w_err = capsys.readouterr()
    _, s_err = starter.communicate(timeout=600)
    assert starter.returncode == 0 and code == 0, (s_err, w_err)
    # Which line says it depends on timing: a worker that starts after the confirmation studies
    # exist joins them with the pair studies ("joining 6 studies"); one that starts before
    # follows the run into them ("joining the confirmation of"). Either way it runs their trials.
    assert "joining the confirmation of" in w_out or "/confirm #" in w_out, w_out
    storage = optuna.storages.RDBStorage(url)
    try:
        pids: Counter = Counter()
        for pair in PAIRS:
            (study,) = [s for s in pair_studies(storage) if s.study_name == f"tiny/{pair}"]
            plan = study.user_attrs[PLAN_ATTR]
            runs = optuna.load_study(study_name=f"tiny/{pair}/confirm", storage=storage)
            done = [t for t in runs.get_trials() if t.state == TrialState.COMPLETE]
            keys = [(t.params["candidate"], t.params["seed"]) for t in done]
            # Every run of the seeds the answer needed (a race's first look, or all), each once.
            seeds = list(recommendations(storage, [study])[study.study_name].seeds)
            assert seeds == plan["seeds"][: len(seeds)], pair
            assert sorted(keys) == sorted((c, s) for c in plan["candidates"] for s in seeds), pair
            pids.update(t.user_attrs["worker_pid"] for t in done)
        assert os.getpid() in pids and starter.pid in pids, pids  # both served it
    finally:
        storage.engine.dispose()
