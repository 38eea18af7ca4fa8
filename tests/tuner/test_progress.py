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


def test_rate_and_eta_from_counts_and_elapsed_time() -> None:
    from tuner.run.progress import rate_and_eta

    assert rate_and_eta(0, 10, 30.0) == "starting"  # never "0.0 trials/min" at a pass's start
    assert rate_and_eta(3, 6, 60.0) == "3.0 trials/min, ETA 2m00s"
    assert rate_and_eta(1, 120, 60.0) == "1.0 trials/min, ETA 2h00m"
    assert rate_and_eta(5, 0, 60.0) == "5.0 trials/min"  # nothing left: no ETA
