"""The entry point of one worker process: ``python -m tuner.worker.process RESULT_FD``.

The parent (pool.run_pool) writes the pickled WorkerSpec to the child's stdin and reads the
pickled ``(report, error)`` from the pipe RESULT_FD when the child ends; stdout and stderr stay
the terminal's, for the per-trial log lines. A fresh interpreter on a module of ours, unlike
multiprocessing's spawn, never re-runs the caller's ``__main__`` (a user's script without a
``if __name__ == "__main__"`` guard would otherwise start a second run in every worker).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

from tuner.worker import interrupts

#: The signals that stop a worker (Ctrl-C, a process manager's stop).
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _interrupt(_signum: int, _frame: object) -> None:
    """The first SIGINT/SIGTERM interrupts (once the trial being claimed is registered, see
    lifecycle.interrupts_held); later ones are ignored, so that a second Ctrl-C — or the
    parent's SIGTERM a grace period after a Ctrl-C — cannot cut short the marking of the running
    trial as FAIL. Ignored from the first one on, deferred or not: a deferred interrupt is raised
    when the claim ends, and its clean-up must not be interrupted either.

    Ignored by this handler returning, not by SIG_IGN: a signal the C handler caught while this
    one ran would otherwise find SIG_IGN when Python dispatches it and be printed as a traceback
    ("Signal 15 ignored due to race condition")."""
    if interrupts.stop_seen():
        return
    interrupts.see_stop()
    lifecycle = sys.modules.get("tuner.worker.lifecycle")  # not imported yet: no trial to protect
    if lifecycle is not None and lifecycle.defer_interrupt():
        return
    raise KeyboardInterrupt


def main(result_fd: int) -> int:
    interrupts.install()  # an interrupt a GC callback swallows is raised later, not printed
    # SIGTERM (terminate, a process manager) counts as Ctrl-C: the running trial is marked FAIL.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    report, error = None, None
    try:
        # The parent started this process with both signals blocked (pool.blocked_signals), so
        # a Ctrl-C while the interpreter and the package were still importing waited; it is
        # delivered here, to the handlers above, inside this guard: one clean exit, no traceback.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        from tuner.worker.pool import work

        interrupts.raise_swallowed()  # one swallowed while importing
        report = work(pickle.load(sys.stdin.buffer))
    except KeyboardInterrupt:
        interrupts.see_stop()  # as in _interrupt: later signals must not cut the clean-up short
        # not imported yet: no trial was claimed
        lifecycle = sys.modules.get("tuner.worker.lifecycle")
        if lifecycle is not None:
            lifecycle.abandon_running("interrupted (Ctrl-C)")
        error = KeyboardInterrupt()
    except BaseException as exc:
        error = exc
        try:
            pickle.dumps(exc)
        except Exception:  # an exception that does not pickle still reaches the parent
            error = RuntimeError(f"{exc.__class__.__name__}: {exc}")
    with os.fdopen(result_fd, "wb") as out:
        pickle.dump((report, error), out)
    return 130 if isinstance(error, KeyboardInterrupt) else (1 if error else 0)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
