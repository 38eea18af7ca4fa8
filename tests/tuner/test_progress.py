"""Progress, phase by phase: log lines when the output is not a terminal (the race: pairs settled,
rounds, their rate, an ETA; the confirmation: runs left, an ETA), a live bar on a terminal; read
from a real SQLite storage whose counts the tests change."""

from __future__ import annotations

import io
import re

import optuna
import pytest
from optuna.trial import TrialState

from objectives import load_config
from tuner import tune
from tuner.kinds import Task
from tuner.options import DEFAULT_CONFIG
from tuner.run.progress import Progress
from tuner.store.adapter import study_id_of, trial_id_of
from tuner.store.db import STOPPED_ATTR, open_storage


def test_log_lines_when_not_a_terminal(opts, capsys: pytest.CaptureFixture) -> None:
    tune(opts(trials=3, progress="auto"), say=print)  # capsys' stdout is not a TTY
    out = capsys.readouterr().out
    assert "\r" not in out  # no live line in a log
    trial_lines = [line for line in out.splitlines() if re.match(r"tiny/0-1 #\d+ ", line)]
    assert len(trial_lines) == 3
    assert all("[worker 0 cpu]" in line for line in trial_lines)
    progress = [line for line in out.splitlines() if line.startswith("progress: ")]
    # The race ends on its own final line; the default confirmation follows with its own.
    assert any(
        re.match(r"progress: race: 1/1 pairs settled, 3 rounds done \(0 running\), "
                 r"[\d.]+ rounds/min, best gain [+-]", p)
        for p in progress
    ), progress  # fmt: skip
    assert any(re.match(r"progress: confirmation: 0 of \d+ runs left", p) for p in progress)
    assert any(line.startswith("tiny/0-1/confirm #") for line in out.splitlines())


def test_rate_and_eta_from_counts_and_elapsed_time() -> None:
    from tuner.run.progress import rate_and_eta

    assert rate_and_eta(0, 10, 30.0) == "starting"  # never "0.0 trials/min" at a pass's start
    assert rate_and_eta(3, 6, 60.0) == "3.0 trials/min, ETA 2m00s"
    assert rate_and_eta(1, 120, 60.0) == "1.0 trials/min, ETA 2h00m"
    assert rate_and_eta(5, 0, 60.0) == "5.0 trials/min"  # nothing left: no ETA
    assert rate_and_eta(6, 1, 60.0, "runs") == "6.0 runs/min, ETA 10s"
    assert rate_and_eta(2, 3, 60.0, "rounds", "~") == "2.0 rounds/min, ETA ~1m30s"


class Clock:
    """A clock the test moves (the display's rate and its rate limit read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """What a terminal is to the display: a stream that says it is a TTY."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 'progress.db'}")


def _study(storage, name: str, values=()) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    for v in values:
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=v))
    return study


def _race(storage) -> tuple[list[Task], dict[str, int]]:
    config = load_config(DEFAULT_CONFIG)  # parsed only: the display reads the database
    tasks = [Task(f"f/{p}", "pair", (0, 1), config, budget=20, strategy="race")
             for p in ("0-1", "0-2", "1-2")]  # fmt: skip
    ids = {t.study: study_id_of(_study(storage, t.study, [0.5, 1.0])) for t in tasks}
    return tasks, ids


def test_the_race_logs_pairs_settled_rounds_their_rate_and_an_eta(storage) -> None:
    tasks, ids = _race(storage)
    add = {name: optuna.load_study(study_name=name, storage=storage) for name in ids}
    out, clock = io.StringIO(), Clock()
    progress = Progress(storage, tasks, ids, mode="auto", stream=out, clock=clock)
    assert progress.mode == "log"  # not a terminal
    progress.poll()
    for v in (0.1, 0.2, 2.5):
        add["f/0-1"].add_trial(optuna.trial.create_trial(params={}, distributions={}, value=v))
    clock.now += 30
    progress.poll()
    # Pair 0-1 settles after 10 rounds, 0-2 has 6, 1-2 has 4 and one running, a minute in.
    for name, more in (("f/0-1", 5), ("f/0-2", 4), ("f/1-2", 2)):
        for _ in range(more):
            add[name].add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.0))
    storage.set_study_user_attr(ids["f/0-1"], STOPPED_ATTR, "settled")
    storage.create_new_trial(ids["f/1-2"])  # RUNNING
    clock.now += 30
    progress.poll()
    clock.now += 5
    progress.poll()  # nothing changed: no line
    add["f/1-2"].add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.0))
    progress.poll()  # changed, but within the rate limit
    progress.poll(final=True)  # the end of the pass: always
    assert out.getvalue().splitlines() == [
        "progress: race: 0/3 pairs settled, 6 rounds done (0 running), starting, "
        "best gain +1.00 pp",
        # 3 rounds in half a minute; none settled yet, so the cap bounds what is left: 51 rounds
        "progress: race: 0/3 pairs settled, 9 rounds done (0 running), 6.0 rounds/min, "
        "ETA at most 8m30s, best gain +2.50 pp",
        # 14 rounds in a minute; the settled pair took 10, so 0-2 needs ~4 more, 1-2 ~6
        "progress: race: 1/3 pairs settled, 20 rounds done (1 running), 14.0 rounds/min, "
        "ETA ~43s, best gain +2.50 pp",
        # the final line: 15 rounds in 65 s; 0-2 ~4 more, 1-2 ~5
        "progress: race: 1/3 pairs settled, 21 rounds done (1 running), 13.8 rounds/min, "
        "ETA ~39s, best gain +2.50 pp",
    ]


def test_the_confirmation_logs_runs_left_and_an_eta(storage) -> None:
    config = load_config(DEFAULT_CONFIG)
    study = _study(storage, "f/0-1/confirm")
    for seed in range(12):
        study.enqueue_trial({"seed": seed})
    ids = {study.study_name: study_id_of(study)}
    task = Task(study.study_name, "confirm", (0, 1), config)
    out, clock = io.StringIO(), Clock()
    progress = Progress(storage, [task], ids, mode="log", stream=out, clock=clock)
    progress.poll()
    waiting = [trial_id_of(t) for t in study.get_trials(deepcopy=False)]
    for trial_id in waiting[:4]:
        storage.set_trial_state_values(trial_id, TrialState.RUNNING)
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    storage.set_trial_state_values(waiting[4], TrialState.RUNNING)
    clock.now += 120
    progress.poll(final=True)
    assert out.getvalue().splitlines() == [
        "progress: confirmation: 12 of 12 runs left (0 running), starting",
        "progress: confirmation: 8 of 12 runs left (1 running), 2.0 runs/min, ETA 4m00s",
    ]


def test_a_terminal_gets_a_live_bar(storage) -> None:
    tasks, ids = _race(storage)
    screen, clock = Terminal(), Clock()
    progress = Progress(storage, tasks, ids, stream=screen, clock=clock)
    assert progress.mode == "live"
    progress.poll()
    study = optuna.load_study(study_name="f/0-1", storage=storage)
    for _ in range(10):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.0))
    clock.now += 60
    progress.poll(final=True)
    text = screen.getvalue()
    assert "progress: " not in text and "\r" in text and text.endswith("\n")
    drawn = [d for d in text.split("\r") if d.strip()]
    # 6 of at most 60 rounds (none settled: the cap), then 16
    assert re.match(r" 10%\|[^|]+\| race: 0/3 pairs settled, 6 rounds done", drawn[0]), drawn
    last = re.match(r" 27%\|([^|]+)\| race: 0/3 pairs settled, 16 rounds done \(0 running\), "
                    r"10\.0 rounds/min, ETA at most 4m24s", drawn[-1])  # fmt: skip
    assert last, drawn
    bar = last.group(1)
    assert bar.strip() and bar != bar.strip()  # partly filled: the bar is drawn, not just text
