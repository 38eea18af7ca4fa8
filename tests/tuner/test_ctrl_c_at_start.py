"""Ctrl-C while the worker processes are still starting (importing torch, optuna and the
package): ``dkd-tune --workers 2`` as a real process group, interrupted as a terminal does at
several moments of the start-up, says one line, exits 130, prints no traceback from any process
and leaves no trial RUNNING. Before the fix, 4 of 7 such moments printed a KeyboardInterrupt
traceback from a worker (tuner.worker.pool.blocked_signals); a worker started after the Ctrl-C could
also outlive the run (tuner.worker.pool._STOPPING)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tuner_helpers import cli


def _workers(pid: int) -> set[int]:
    """The run's worker processes (its children, whichever of its threads started them)."""
    found: set[int] = set()
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found |= {int(c) for c in path.read_text().split()}
        except OSError:  # the thread ended meanwhile
            continue
    return found


def _torch_loaded(pid: int) -> bool:
    """The process has loaded torch's library: its imports are done or nearly (a worker imports
    torch with tuner.worker.pool, right before it opens the storage and claims a trial)."""
    try:
        return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # it ended meanwhile
        return False


#: The moments of the start-up, as states of the run's process tree rather than delays after its
#: first line (on a busy machine, or beside another test process under xdist, a delay lands in
#: another moment each time): the first poll that sees a worker process still importing, both
#: started and neither past torch's import, a worker past it (opening the storage, claiming).
MOMENTS: dict[str, Callable[[int], bool]] = {
    "a-worker-importing": lambda pid: any(not _torch_loaded(w) for w in _workers(pid)),
    "two-importing": lambda pid: len(w := _workers(pid)) >= 2 and not any(map(_torch_loaded, w)),
    "torch-loaded": lambda pid: any(map(_torch_loaded, _workers(pid))),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_while_workers_start(tiny, tmp_path, moment: str) -> None:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    args = cli("--config", tiny["config"], "--bundles", tiny["bundles"], "--storage", url,
               "--pairs", "0-1,0-2", "--trials", "6", "--workers", "2")  # fmt: skip
    run = subprocess.Popen(args, start_new_session=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    first = run.stdout.readline()  # the headline: the studies are set up, the pool starts next
    assert first.startswith("federation tiny"), (first, run.poll())
    deadline = time.monotonic() + 120
    while not MOMENTS[moment](run.pid):
        assert run.poll() is None, ("the run ended before the moment", moment, run.communicate())
        assert time.monotonic() < deadline, moment
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines() == [
        "dkd-tune: interrupted; rerun the same command to continue"
    ], err
    # No worker outlives the run (one started after the Ctrl-C, unknown to the stop, would run
    # on as an orphan): the process group empties.
    deadline = time.monotonic() + 15
    while _group_alive(run.pid):
        assert time.monotonic() < deadline, "a worker process outlived the interrupted run"
        time.sleep(0.1)
    storage = optuna.storages.RDBStorage(url)
    try:
        for study in storage.get_all_studies():
            states = {t.state for t in storage.get_all_trials(study._study_id)}
            assert TrialState.RUNNING not in states, study.study_name
    finally:
        storage.engine.dispose()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_interrupt_a_gc_callback_swallows_is_raised_later(monkeypatch, capfd) -> None:
    """Seen once in 20 runs of the kill-and-Ctrl-C scenario: the Ctrl-C landed in a weakref
    callback (SQLAlchemy's), where Python prints "Exception ignored ... KeyboardInterrupt" and
    drops it. dkd-tune's hook records it instead, for the next safe point to raise."""
    import gc
    import sys
    import weakref

    from tuner.worker import interrupts

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored afterwards
    interrupts.install()

    class Owner:
        pass

    def callback(_ref: object) -> None:
        raise KeyboardInterrupt  # as a SIGINT handler does, wherever the signal lands

    owner = Owner()
    ref = weakref.ref(owner, callback)
    del owner  # the callback runs here; its exception cannot propagate
    gc.collect()
    assert ref() is None
    assert "Exception ignored" not in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        interrupts.raise_swallowed()
    interrupts.raise_swallowed()  # raised once, then cleared


#: A worker's handlers receive SIGINT and SIGTERM at once (a Ctrl-C, and the pool's stop a
#: moment later), both caught by the C handler before Python runs either Python handler.
BOTH_AT_ONCE = """
import os, signal, sys
from tuner.worker import process
signal.signal(signal.SIGINT, process._interrupt)
signal.signal(signal.SIGTERM, process._interrupt)
signal.pthread_sigmask(signal.SIG_BLOCK, process.STOP_SIGNALS)
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGTERM)
try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, process.STOP_SIGNALS)
    for _ in range(1000):
        pass
except KeyboardInterrupt:
    print("interrupted once")
"""


def test_a_stop_signal_caught_during_the_first_is_ignored_quietly() -> None:
    """Seen in a full suite run: the second signal was dispatched after the first handler had set
    SIG_IGN, and Python printed "OSError: Signal 15 ignored due to race condition" with a
    traceback. The handler now ignores later signals itself."""
    out = subprocess.run([sys.executable, "-c", BOTH_AT_ONCE], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == "interrupted once\n"
    assert out.stderr == ""


def test_a_trial_cut_by_a_stop_signal_is_failed_as_interrupted_whatever_surfaced(
    monkeypatch,
) -> None:
    """Seen once under xdist load (tests/tuner/test_scale_sqlite.py): a Ctrl-C that lands inside
    SQLAlchemy surfaced as a bare AssertionError, and the trial's fail_reason called a Ctrl-C a
    bug. After a stop signal a worker's fail reason says it was interrupted, and keeps what
    surfaced; before one, an exception is named as it is."""
    from tuner.worker import interrupts

    monkeypatch.setattr(interrupts._Stopping, "seen", False)
    assert interrupts.reason(AssertionError()) == "AssertionError: "
    interrupts.see_stop()
    assert interrupts.stop_seen()
    assert interrupts.reason(AssertionError()) == (
        "interrupted (Ctrl-C; surfaced as AssertionError: )"
    )
    assert interrupts.reason(KeyboardInterrupt()) == "KeyboardInterrupt: "
