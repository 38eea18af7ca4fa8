"""``dkd-tune status`` leads with the answer (tuner.views.status): for a 45-pair federation every
line fits 120 characters and names its pair's answer and state; the federation's line gives the
wall time the stored trials took; a run closes with the same lines."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import datetime

from tuner.cli import main
from tuner.formats import duration
from tuner.views.status import WIDTH, answer_table, summary, wall_time


def _row(a: int, b: int, k: int) -> dict:
    """A pair row as tuner.read.results.pair_rows gives it, in one of four states."""
    tuned = k % 3 == 0
    params = {"temperature": 12.345678, "alpha": 0.987654, "divergence": "js",
              "transfer_set": "public+self", "aggregation": "sum", "position": "b"}  # fmt: skip
    answered = k % 4 != 3
    return {
        "pair": f"{a}-{b}", "student": b, "teacher": a, "finished": 30, "running": 0,
        "recommended_student": b if answered else None,
        "recommended_teacher": a if answered else None,
        "recommended_gain_mean": 5.0 if answered else None,
        "recommended_is_default": not tuned, "recommended_params": params,
        "confirmed_difference": 2.5 if tuned else None,
        "confirmed_difference_ci": (1.25, 3.75) if tuned else None,
        "seeds": 8 if tuned else 3,
        "rounds": 10 + k, "stopped": ("settled", "cap", "settled", None)[k % 4],
    }  # fmt: skip


def test_status_of_45_pairs_fits_the_width_and_names_each_answer() -> None:
    pairs = list(itertools.combinations(range(10), 2))
    rows = [_row(a, b, k) for k, (a, b) in enumerate(pairs)]
    lines = answer_table(rows).splitlines()
    assert len(pairs) == 45 and len(lines) == 46
    # 11 of the 45 still race (k % 4 == 3); 11 of the answered ones are tuned (k % 3 == 0).
    assert lines[0].startswith("34/45 pairs answered, 11 tuned recommendations (mean +2.50 pp")
    for k, (line, row) in enumerate(zip(lines[1:], rows, strict=True)):
        assert len(line) <= WIDTH, line
        assert line.startswith(f"{row['pair']} ")
        if k % 4 == 3:
            assert "no answer yet" in line and f"racing, {10 + k} rounds" in line
        elif k % 3 == 0:
            assert "+2.50 pp [+1.25, +3.75] (8 seeds)" in line, line
        else:
            assert "default (3 seeds)" in line
        if k % 4 == 1:
            assert f"at its cap after {10 + k} rounds" in line
        elif k % 4 in (0, 2):
            assert line.endswith(f"settled after {10 + k} rounds")


def test_the_summary_gives_the_wall_time_from_the_first_start_to_the_last_completion() -> None:
    rows = [_row(0, 1, 0), _row(0, 2, 1), _row(1, 2, 2)]
    spans = [("2026-12-05T10:00:00.250000", "2026-12-05T10:40:00"),
             ("2026-12-05T10:05:00", "2026-12-05T11:02:30.250000"), (None, None)]  # fmt: skip
    for row, (start, end) in zip(rows, spans, strict=True):
        row.update(first_trial_start=start, last_trial_complete=end)
    assert answer_table(rows).splitlines()[0].endswith(", 33 rounds, wall time 1h02m")
    assert wall_time(rows) == 3750.0
    assert wall_time(rows[2:]) is None and "wall time" not in summary(rows[2:])
    rows[1]["last_trial_complete"] = "2026-12-05T10:05:42.250000"  # under a minute
    assert summary(rows[1:2]).endswith(", 11 rounds, wall time 42s")
    assert summary(rows[:1]).endswith(", 10 rounds, wall time 40m00s")
    for row in rows:  # the fixed strategy: no rounds, its trials
        row.update(rounds=None, stopped=None)
    assert summary(rows).endswith(", 90 trials, wall time 40m00s")


def test_status_of_a_stored_run_gives_its_wall_time(tuned, capsys) -> None:
    """Read from the stored trials: the first start to the last completion over the pair studies
    and their confirmation studies (every study in this storage)."""
    with sqlite3.connect(tuned["path"]) as db:
        first, last = db.execute(
            "SELECT min(datetime_start), max(datetime_complete) FROM trials"
        ).fetchone()
    seconds = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    assert main(["status", "--storage", tuned["url"]]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith("2/2 pairs answered")
    assert head.endswith(f", wall time {duration(seconds)}")


def test_a_run_ends_with_the_lines_status_prints(tiny, tmp_path, capsys) -> None:
    """``dkd-tune --pairs ...`` closes with status's answer-first lines (one renderer), not the
    single-trial table."""
    url = f"sqlite:///{tmp_path / 'run.db'}"
    argv = ["--config", tiny["config"], "--bundles", tiny["bundles"], "--storage", url,
            "--pairs", "0-1", "--trials", "3", "--progress", "quiet"]  # fmt: skip
    assert main(argv) == 0
    run = capsys.readouterr().out.splitlines()
    assert main(["status", "--storage", url]) == 0
    status = capsys.readouterr().out.splitlines()
    assert len(status) == 2 and status[0].startswith("1/1 pairs answered")
    assert run[-2:] == status and run[-3].startswith("run finished: ")
    assert not any("best configuration (single trials)" in line for line in run)


def test_one_tuned_recommendation_is_said_in_the_singular() -> None:
    assert ", 1 tuned recommendation (mean +2.50 pp" in summary([_row(0, 1, 0), _row(0, 2, 1)])


def test_a_pair_whose_incumbent_came_from_the_federation_says_so() -> None:
    """Issue 26 item 5: why a pair settled early is visible in its status line (the source is a
    sibling study's name, shown by its pair) and in its race words (status --wide, report,
    note), which also say what the federation's best guess did there."""
    from tuner.views.status import state
    from tuner.views.tables import race

    row = {**_row(0, 2, 0), "configurations": 9, "incumbent_seeds": 4,
           "federation_proposals": 2, "federation_incumbent": "fmnist/0-1#14",
           "federation_guess_lead": 1.234}  # fmt: skip
    assert state(row) == "settled after 10 rounds (incumbent from 0-1#14)"
    assert race(row).endswith(
        "; 2 from the federation, its best guess +1.23 pp over the default here, incumbent "
        "from fmnist/0-1#14"
    )
    alone = {**row, "federation_proposals": None, "federation_incumbent": None}
    assert state(alone) == "settled after 10 rounds" and "federation" not in race(alone)
    lines = answer_table([row] * 45).splitlines()
    assert max(map(len, lines)) <= WIDTH
