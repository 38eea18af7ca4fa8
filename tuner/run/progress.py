"""Progress of a run, phase by phase: a live bar on a terminal (drawn by tqdm), plain log lines
otherwise (one per change, at most every ``LOG_EVERY_S`` seconds).

Read from the database (not from the workers), so it shows the truth whatever process or machine
ran the trials. Each phase says what the user waits for: the race (pairs settled of all, rounds
done, rounds per minute, ETA), the confirmation (runs left of all, runs per minute, ETA), a fixed
tuning (trials done of the budget); the best gain so far where it means something. The ETA is the
work left at the mean rate of this pass; a race's work left is an estimate (below).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import optuna
from tqdm import tqdm

from tuner.formats import duration
from tuner.kinds import KINDS, Task
from tuner.store.db import Counts, best_value, count_trials
from tuner.strategies import strategy

#: Log mode: at most one line per this many seconds (and one when the pass ends).
LOG_EVERY_S = 10.0


def rate_and_eta(
    done: int, left: int, elapsed_s: float, unit: str = "trials", about: str = ""
) -> str:
    """The rate and time left from the units done in this pass and its elapsed time: "starting"
    until the pass has done one unit (never a misleading 0.0/min), then the ETA of the ``left``
    units at the mean rate (``about``: "~" or "at most " where ``left`` is an estimate)."""
    if done <= 0 or elapsed_s <= 0:
        return "starting"
    rate = done / (elapsed_s / 60)
    if left <= 0:
        return f"{rate:.1f} {unit}/min"
    return f"{rate:.1f} {unit}/min, ETA {about}{duration(left / rate * 60)}"


@dataclass(frozen=True)
class Phase:
    """What a pass of the run is, in words: its name, what one trial is, whether its studies
    stop early (a race: pairs settle) and whether the best value so far is shown."""

    name: str
    unit: str
    settles: bool
    shows_best: bool


def phase_of(tasks: Sequence[Task]) -> Phase:
    """The phase the tasks are served in: a kind that races takes it from its strategy."""
    phases = []
    for t in tasks:
        kind = KINDS[t.kind]
        if kind.races:
            s = strategy(t.strategy)
            phases.append(Phase(s.phase, s.unit, s.decides_before_claim, kind.shows_best))
        else:
            phases.append(Phase(kind.phase, kind.unit, False, kind.shows_best))
    distinct = list(dict.fromkeys(phases))
    if len(distinct) == 1:
        return distinct[0]
    # A joining worker may serve studies of several phases at once.
    return Phase("run", "trials", any(p.settles for p in distinct),
                 all(p.shows_best for p in distinct))  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    """The counts a progress line is written from."""

    done: int  # units finished (within budget)
    left: int  # units still to do (estimated for a race)
    about: str  # "" (exact), "~" or "at most " (a race's estimate)
    running: int
    failed: int
    studies: int
    settled: int  # studies over: stopped early (a race's pairs settled) or at their budget


class Progress:
    """Call :meth:`poll` now and then; it prints only when something changed (or, live, to
    refresh the rate). ``clock`` is the time source (seconds; tests give their own)."""

    def __init__(
        self,
        storage: optuna.storages.RDBStorage,
        tasks: Sequence[Task],
        ids: dict[str, int],
        mode: str = "auto",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.storage = storage
        # study id -> budget (None: a fixed kind, whose queued trials are its work)
        self.budgets = {ids[t.study]: t.budget for t in tasks}
        self.ids = list(self.budgets)
        self.phase = phase_of(tasks)
        self.queued = all(b is None for b in self.budgets.values())
        gains = all(KINDS[t.kind].value_name == "gain" for t in tasks)
        self.best_label, self.unit = ("best gain", " pp") if gains else ("best value", "")
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "live" if self.stream.isatty() else "log"
        self.mode = mode
        self.clock = clock
        self.started = clock()
        self.start_done = self.snapshot().done
        self._state: tuple | None = None
        self._last: tuple | None = None
        self._last_log: float | None = None
        self._bar: tqdm | None = None
        self._fraction = (0, 0)

    def snapshot(self) -> Snapshot:
        """The studies' counts now, and the work left: the budget (or the queue) minus what is
        done; for a race, whose pairs stop when more rounds cannot change their answer, the
        unsettled pairs are expected to take as many rounds as the settled ones took on average
        (at least one more, at most the cap), or the cap while none has settled."""
        counts = count_trials(self.storage, self.ids)
        done = left = 0
        # A study is over when it stopped early (a race settled) or reached its budget (cap).
        settled = [
            min(c.finished, b)
            for i, c in counts.items()
            if (b := self.budgets[i]) is not None and (c.stopped or c.finished >= b)
        ]
        typical = statistics.fmean(settled) if settled else None
        for i, c in counts.items():
            budget = self.budgets[i]
            if budget is None:  # a fixed kind: its queue is its work
                done += c.finished
                left += c.running + c.waiting
                continue
            done += min(c.finished, budget)
            left += self._left(c, budget, typical)
        about = ""
        if self.phase.settles:
            about = "~" if typical is not None else "at most "
        values = counts.values()
        return Snapshot(done, left, about, sum(c.running for c in values),
                        sum(c.failed for c in values), len(counts), len(settled))  # fmt: skip

    def _left(self, c: Counts, budget: int, typical: float | None) -> int:
        """One study's units still to do (see :meth:`snapshot`)."""
        if c.stopped or c.finished >= budget:
            return 0
        if not self.phase.settles or typical is None:
            return max(0, budget - c.finished)
        return max(0, min(budget, max(round(typical), c.finished + 1)) - c.finished)

    def line(self) -> str:
        """The phase's progress in one line, e.g. ``race: 3/10 pairs settled, 120 rounds done
        (2 running), 4.0 rounds/min, ETA ~12m00s, best gain +1.23 pp``."""
        s = self.snapshot()
        p = self.phase
        rate = rate_and_eta(s.done - self.start_done, s.left, self.clock() - self.started,
                            p.unit, s.about)  # fmt: skip
        extra = f", {s.failed} failed" if s.failed else ""
        total = s.done + s.left
        if self.queued:  # a fixed kind's work is its queue: what the user waits for is left
            head = f"{s.left} of {total} {p.unit} left ({s.running} running{extra})"
        elif p.settles:
            head = (f"{s.settled}/{s.studies} pairs settled, {s.done} {p.unit} done "
                    f"({s.running} running{extra})")  # fmt: skip
        else:
            head = f"{s.done}/{total} {p.unit} done ({s.running} running{extra})"
        text = f"{p.name}: {head}, {rate}"
        best = None
        if p.shows_best:
            best = best_value(self.storage, self.ids)
            text += f", {self.best_label} " + ("n/a" if best is None else f"{best:+.2f}{self.unit}")
        self._state = (s.done, s.running, s.failed, s.settled, best)
        self._fraction = (s.done, total)
        return text

    def poll(self, final: bool = False) -> None:
        """Show the progress now: the live bar redrawn, or a log line when the counts changed
        (at most every LOG_EVERY_S seconds), and always at the end of the pass (``final``)."""
        if self.mode == "quiet":
            return
        text = self.line()
        if self.mode == "live":
            self._draw(text, final)
            return
        now = self.clock()
        due = self._last_log is None or now - self._last_log >= LOG_EVERY_S
        if final or (self._state != self._last and due):
            print(f"progress: {text}", file=self.stream, flush=True)
            self._last, self._last_log = self._state, now

    def _draw(self, text: str, final: bool) -> None:
        """The live bar: its fill is the units done of the (estimated) total, its text the line."""
        done, total = self._fraction
        if self._bar is None:  # drawn once made
            self._bar = tqdm(
                total=max(total, 1), initial=done, desc=text, file=self.stream, leave=True,
                dynamic_ncols=True, bar_format="{percentage:3.0f}%|{bar}| {desc}",
            )  # fmt: skip
        bar = self._bar
        bar.total, bar.n = max(total, 1), done
        bar.set_description_str(text, refresh=False)
        bar.refresh()
        if final:
            bar.close()
