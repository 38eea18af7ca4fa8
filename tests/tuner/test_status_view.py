"""``dkd-tune status`` leads with the answer (tuner.views.status): for a 45-pair federation every
line fits 120 characters and names its pair's answer and state."""

from __future__ import annotations

import itertools

from tuner.views.status import WIDTH, answer_table


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
