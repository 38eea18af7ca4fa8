"""Progress output when stdout is not a terminal: one log line per trial and progress lines."""

from __future__ import annotations

import re

import pytest

from tuner import tune


def test_log_lines_when_not_a_terminal(opts, capsys: pytest.CaptureFixture) -> None:
    tune(opts(trials=3, progress="auto"), say=print)  # capsys' stdout is not a TTY
    out = capsys.readouterr().out
    assert "\r" not in out  # no live line in a log
    trial_lines = [line for line in out.splitlines() if re.match(r"tiny/0-1 #\d+ ", line)]
    assert len(trial_lines) == 3
    assert all("[worker 0 cpu]" in line for line in trial_lines)
    progress = [line for line in out.splitlines() if line.startswith("progress: ")]
    # The tuning phase ends on its own final line; the default confirmation follows with its own.
    assert any(
        re.match(r"progress: 3/3 trials done \(0 running\), [\d.]+ trials/min, best gain [+-]", p)
        for p in progress
    ), progress
    assert any(line.startswith("tiny/0-1/confirm #") for line in out.splitlines())
