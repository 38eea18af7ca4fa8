"""Progress of a run: a live one-line display on a terminal, plain log lines otherwise.

Read from the database (not from the workers), so it shows the truth whatever process or machine
ran the trials: trials done of the total, trials per minute since the start, best gain so far.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

import optuna

from tuner.kinds import KINDS, Task
from tuner.store.db import best_value, count_trials


def rate_and_eta(done: int, total: int, elapsed_s: float) -> str:
    """The rate and time left from counts done in this pass and its elapsed time: "starting"
    until the pass has done one unit (never a misleading 0.0/min), "ETA" from the mean rate."""
    if done <= 0 or elapsed_s <= 0:
        return "starting"
    rate = done / (elapsed_s / 60)
    left = max(total, 0)
    if left == 0:
        return f"{rate:.1f} trials/min"
    seconds = round(left / rate * 60)
    eta = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s"
    )
    return f"{rate:.1f} trials/min, ETA {eta}"


class Progress:
    """Call :meth:`poll` now and then; it prints only when something changed (or, live, to
    refresh the rate)."""

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        tasks: Sequence[Task],
        ids: dict[str, int],
        mode: str = "auto",
        stream: TextIO | None = None,
    ) -> None:
        self.storage = storage
        # study id -> budget (None: a fixed kind, whose queued trials are its work)
        self.budgets = {ids[t.study]: t.budget for t in tasks}
        self.ids = list(self.budgets)
        gains = all(KINDS[t.kind].value_name == "gain" for t in tasks)
        self.best_label, self.unit = ("best gain", " pp") if gains else ("best value", "")
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "live" if self.stream.isatty() else "log"
        self.mode = mode
        self.total = self._total(count_trials(storage, self.ids))
        self.started = time.monotonic()
        self.start_done = self._done()[0]
        self._last: tuple | None = None
        self._last_log = 0.0

    def _total(self, counts: dict) -> int:
        """Trials the run will have: the budget, or what a study has once it stopped early (a
        settled race) or where its queue is its work."""
        return sum(
            c.finished + c.running + c.waiting if b is None
            else min(b, c.finished) if c.stopped else b
            for b, c in ((self.budgets[i], counts[i]) for i in self.ids)
        )  # fmt: skip

    def _done(self) -> tuple[int, int, int]:
        counts = count_trials(self.storage, self.ids)
        self.total = self._total(counts)
        done = sum(
            c.finished if self.budgets[i] is None else min(c.finished, self.budgets[i])
            for i, c in counts.items()
        )
        values = counts.values()
        return done, sum(c.running for c in values), sum(c.failed for c in values)

    def line(self) -> str:
        done, running, failed = self._done()
        elapsed = time.monotonic() - self.started
        rate = rate_and_eta(done - self.start_done, self.total - done, elapsed)
        best = best_value(self.storage, self.ids)
        best_text = "n/a" if best is None else f"{best:+.2f}{self.unit}"
        self._state = (done, running, failed, best)
        extra = f", {failed} failed" if failed else ""
        return (
            f"{done}/{self.total} trials done ({running} running{extra}), "
            f"{rate}, {self.best_label} {best_text}"
        )

    def poll(self, final: bool = False) -> None:
        if self.mode == "quiet":
            return
        text = self.line()
        if self.mode == "live":
            end = "\n" if final else ""
            self.stream.write(f"\r\033[K{text}{end}")
            self.stream.flush()
            return
        # Log mode: a line when the counts changed, at most every 10 s, and at the end.
        now = time.monotonic()
        if final or (self._state != self._last and now - self._last_log >= 10):
            print(f"progress: {text}", file=self.stream, flush=True)
            self._last, self._last_log = self._state, now
