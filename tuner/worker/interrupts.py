"""Interrupts Python swallowed. A Ctrl-C (or the worker's SIGTERM) raises KeyboardInterrupt in
whatever code runs at that moment; when that is a garbage-collector callback (SQLAlchemy
registers some), Python cannot raise it there: it prints "Exception ignored in ... Traceback ...
KeyboardInterrupt" and goes on as if nothing happened. The hook here records such an interrupt
instead of printing it, and :func:`raise_swallowed` raises it at the next safe point (a trial's
claim or evaluation point, the run's progress loop), so the run still stops with its one line.

Standard library only: worker processes install the hook before importing anything heavy.
"""

from __future__ import annotations

import sys
import threading
from typing import Any


class _Swallowed:
    pending = False


class _Stopping:
    """Set by the worker's first stop signal (tuner.worker.process)."""

    seen = False


def stop_seen() -> bool:
    """True once this process was told to stop (Ctrl-C, SIGTERM)."""
    return _Stopping.seen


def see_stop() -> None:
    _Stopping.seen = True


def reason(exc: BaseException) -> str:
    """A trial's fail reason for ``exc``. After a stop signal it says so whatever the exception:
    an interrupt that lands inside a library (SQLAlchemy, a DataLoader) can surface there as
    another error (an AssertionError from a half-done operation, seen under load), and the
    trial was cut short by the Ctrl-C, not by a bug."""
    what = f"{exc.__class__.__name__}: {exc}"
    if stop_seen() and not isinstance(exc, KeyboardInterrupt):
        return f"interrupted (Ctrl-C; surfaced as {what})"
    return what


def hook(info: Any) -> None:
    """``sys.unraisablehook``: a KeyboardInterrupt is recorded; anything else printed as usual."""
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        _Swallowed.pending = True
        return
    sys.__unraisablehook__(info)


def install() -> None:
    sys.unraisablehook = hook


def raise_swallowed() -> None:
    """In the main thread: raise an interrupt that a callback swallowed, if there was one."""
    if _Swallowed.pending and threading.current_thread() is threading.main_thread():
        _Swallowed.pending = False
        raise KeyboardInterrupt


__all__ = ["hook", "install", "raise_swallowed", "reason", "see_stop", "stop_seen"]
