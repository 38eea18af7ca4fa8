"""``dkd-tune status``, answer first: a line for the federation, then one line per pair (at most
120 characters) with what to use, its confirmed difference and the pair's state. The single-trial
table stays behind ``status --wide`` (tuner.views.tables.status_table). The one owner of the
answer's wording: the run's closing lines and the report's first section are built from here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

from tuner.formats import config_line, duration
from tuner.views.tables import client_status_table, status_table
from tuner.views.terminal import printable

WIDTH = 120


def state(row: dict) -> str:
    """Where the pair stands: how its study spent its budget (a race: settled after N rounds, at
    its cap, still racing; a fixed study: its trials) and whether its answer is confirmed yet."""
    answered = row.get("recommended_gain_mean") is not None
    rounds = row.get("rounds")
    if rounds is None:  # no race: its trials
        spent = f"{row['finished']} trials"
    elif row.get("stopped") == "settled":
        spent = f"settled after {rounds} rounds"
    elif row.get("stopped") == "cap":
        spent = f"at its cap after {rounds} rounds"
    else:
        return f"racing, {rounds} rounds"
    source = row.get("federation_incumbent")
    if source:  # why a pair may settle early: the federation's guess held
        spent += f" (incumbent from {source.rpartition('/')[2]})"
    if answered:
        return spent
    return f"{spent}, running" if row.get("running") else f"{spent}, not confirmed yet"


def answer(row: dict) -> str:
    """The pair's answer: the configuration to use (or default) and its difference."""
    if row.get("recommended_gain_mean") is None:
        return "no answer yet"
    seeds = f"{row['seeds']} seeds"
    if row["recommended_is_default"]:
        return f"default ({seeds})"
    params = config_line(row["recommended_params"], "a")
    diff, (low, high) = row["confirmed_difference"], row["confirmed_difference_ci"]
    return f"{params}  {diff:+.2f} pp [{low:+.2f}, {high:+.2f}] ({seeds})"


def pair(row: dict) -> str:
    """The pair and the direction of its answer (``2-3 2<-3``; the pair alone before one)."""
    who = row.get("recommended_student")
    teacher = row.get("recommended_teacher")
    if who is None:
        who, teacher = row.get("student"), row.get("teacher")
    return f"{row['pair']} {who}<-{teacher}" if who is not None else row["pair"]


def joined(pair_: str, answer_: str, state_: str) -> str:
    """A pair's three parts as one status line, cut to WIDTH characters."""
    text = printable(f"{pair_:<10} {answer_}  | {state_}")  # names come from storage
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"


def line(row: dict) -> str:
    """One pair's status line."""
    return joined(pair(row), answer(row), state(row))


def wall_time(rows: list[dict]) -> float | None:
    """Seconds from the first trial's start to the last trial's completion over the rows (their
    pair and confirmation studies); None before any trial completed."""
    starts = [datetime.fromisoformat(r["first_trial_start"]) for r in rows
              if r.get("first_trial_start")]  # fmt: skip
    ends = [datetime.fromisoformat(r["last_trial_complete"]) for r in rows
            if r.get("last_trial_complete")]  # fmt: skip
    if not starts or not ends:
        return None
    return (max(ends) - min(starts)).total_seconds()


def summary(rows: list[dict]) -> str:
    """The federation in one line: pairs answered, tuned recommendations, their mean gain, the
    rounds (trials where no pair raced) and the wall time."""
    answered = [r for r in rows if r.get("recommended_gain_mean") is not None]
    tuned = [r for r in answered if not r["recommended_is_default"]]
    mean = sum(r["confirmed_difference"] for r in tuned) / len(tuned) if tuned else 0.0
    raced = any(r.get("rounds") is not None for r in rows)
    spent = sum((r.get("rounds") if raced else r.get("finished")) or 0 for r in rows)
    seconds = wall_time(rows)
    wall = "" if seconds is None else f", wall time {duration(seconds)}"
    recs = "recommendation" if len(tuned) == 1 else "recommendations"
    return (f"{len(answered)}/{len(rows)} pairs answered, {len(tuned)} tuned {recs} "
            f"(mean {mean:+.2f} pp over the default), {spent} {'rounds' if raced else 'trials'}"
            f"{wall}")  # fmt: skip


def answer_table(rows: list[dict]) -> str:
    """The answer-first status of the pair studies."""
    if not rows:
        return "no dkd-tune studies in this storage yet: run dkd-tune to start one\n"
    return "\n".join([summary(rows), *map(line, rows)]) + "\n"


def by_federation(rows: list[dict], table: Callable[[list[dict]], str]) -> str:
    """``table`` of the rows, one block per federation (its name and federation hash) headed by
    both where the storage holds several, so no line adds up two federations. A name stored
    under two hashes (two configs, which a run refuses since: tuner.kinds.base
    federation_clash) is said first, in one line."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("federation"), r.get("federation_hash")), []).append(r)
    if len(groups) <= 1:
        return table(rows)
    twice = Counter(name for name, _ in groups)
    out = [
        printable(f"federation {name} is stored under {n} federation hashes "
                  f"({', '.join(h for f, h in groups if f == name)}): different configs under one "
                  "name, shown apart below; a run adds to neither")
        for name, n in twice.items() if n > 1
    ]  # fmt: skip
    for (name, federation_hash), mine in groups.items():
        out.append(printable(f"federation {name} ({federation_hash}):"))
        out.append(table(mine).rstrip("\n"))
    return "\n".join(out) + "\n"


def render(pairs: list[dict], clients: list[dict], *, wide: bool = False) -> str:
    """What ``dkd-tune status`` and the end of a run print: the pair studies' answers (``wide``:
    the single-trial table), then the client studies' table where there are any."""
    # One block per federation (name and hash) where the storage holds several.
    table = status_table if wide else answer_table
    text = by_federation(pairs, table) if pairs or not clients else ""
    return text + by_federation(clients, client_status_table)
