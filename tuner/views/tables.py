"""Text views over tuner.read.results: ``dkd-tune status`` (pair and client studies) and the
``dkd-tune compare`` table, all laid out by one formatter."""

from __future__ import annotations

from collections.abc import Sequence

from objectives import AGGREGATIONS, DIVERGENCES
from tuner.formats import config_line, pm
from tuner.read.decision import FIRST_LEVEL
from tuner.read.results import LEVEL, Cell
from tuner.views.terminal import printable


def layout(rows: Sequence[Sequence[str]], left: Sequence[int]) -> list[str]:
    """Columns padded to their widest cell; the columns in ``left`` flush left, others right.
    Every cell goes through :func:`~tuner.views.terminal.printable`: names come from storage."""
    rows = [[printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def gain(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _budget(row: dict) -> str:
    return f"{row['finished']}/{row['budget']}" if row["budget"] else str(row["finished"])


def pair_config(row: dict) -> str:
    """A pair row's best configuration in one line."""
    p = row["best_params"] or {}
    return f"{row['student']}<-{row['teacher']} {config_line(p, 'a')}" if p else "-"


def client_config(row: dict) -> str:
    """A client row's best configuration in one line."""
    return config_line(row["best_params"], "a")


def race(row: dict) -> str:
    """A raced pair row's race in a few words: rounds, configurations, the incumbent's seeds,
    and whether it stopped."""
    if row.get("rounds") is None:
        return "-"
    state = {"settled": "settled", "cap": "at its cap"}.get(row["stopped"], "racing")
    seeds = row["incumbent_seeds"]
    return (f"{row['rounds']} rounds, {row['configurations']} configs, incumbent "
            f"{seeds if seeds is not None else '-'} seeds, {state}{shared(row)}")  # fmt: skip


def shared(row: dict) -> str:
    """What the federation contributed to a pair (``--strategy federation``), in a few words:
    the proposals it took, the first one's lead over the default here, where the incumbent came
    from; "" for a pair that raced alone."""
    n = row.get("federation_proposals")
    if n is None:
        return ""
    if n == 0:
        return "; nothing from the federation (no settled pair led its default yet)"
    lead = row.get("federation_guess_lead")
    guess = f", its best guess {lead:+.2f} pp over the default here" if lead is not None else ""
    source = row.get("federation_incumbent")
    kept = f", incumbent from {source}" if source else ", incumbent its own"
    return f"; {n} from the federation{guess}{kept}"


def recommended(row: dict) -> str:
    """A pair row's recommendation in one line: what to use, its confirmed gain against the
    default's over the same fresh seeds, and whether the difference is beyond the noise."""
    if row.get("recommended_gain_mean") is None:
        return "-"
    seeds = f"{row['seeds']} seeds"
    gain_ = pm(row["recommended_gain_mean"], row["recommended_gain_std"])
    diff, p = row["confirmed_difference"], row["p_value"]
    if row["recommended_is_default"]:
        who = f"{row['recommended_student']}<-{row['recommended_teacher']}"
        why = (
            "no tuned candidate confirmed above it"
            if diff is None
            else f"best tuned {diff:+.2f}, p={p:.2f}: {_short_of(row)}"
        )
        return f"the default, {who}: {gain_} ({why}; {seeds})"
    config = pair_config(
        {**row, "best_params": row["recommended_params"], "student": row["recommended_student"],
         "teacher": row["recommended_teacher"]})  # fmt: skip
    default = pm(row["confirmed_default_gain_mean"], row["confirmed_default_gain_std"])
    low, high = row["confirmed_difference_ci"]
    return (f"{config}: {gain_} vs default {default} ({diff:+.2f} [{low:+.2f}, {high:+.2f}], "
            f"p={p:.3f}; {seeds})")  # fmt: skip


def _short_of(row: dict) -> str:
    """Why a tuned candidate was not recommended."""
    if row["p_value"] >= (row.get("level") or LEVEL):
        return "within noise"
    return f"below --min-gain {row['min_gain']:g}"


def status_table(rows: list[dict]) -> str:
    """The pair studies' lines of ``dkd-tune status``: single-trial figures, and the confirmed
    recommendation where the run confirmed its candidates."""
    if not rows:
        return "no dkd-tune studies in this storage yet: run dkd-tune to start one\n"
    confirmed = any(r.get("recommended_gain_mean") is not None for r in rows)
    raced = any(r.get("rounds") is not None for r in rows)
    head = ("study", "finished", "running", "failed", "pruned", "best", "default",
            "improvement", "best configuration (single trials)")  # fmt: skip
    head += ("race",) if raced else ()
    head += ("recommended (confirmed)",) if confirmed else ()
    lines = [head] + [
        (r["study"], _budget(r), str(r["running"]), str(r["failed"]), str(r["pruned"]),
         gain(r["best_gain"]), gain(r["default_gain"]), gain(r["improvement"]), pair_config(r))
        + ((race(r),) if raced else ())
        + ((recommended(r),) if confirmed else ())
        for r in rows
    ]  # fmt: skip
    better = [r for r in rows if r["improvement"] is not None and r["improvement"] > 0]
    tail = [
        f"gains in percentage points; the single best trial beats the default in {len(better)} "
        f"of {len(rows)} pairs"
    ]
    if confirmed:
        beyond = sum(1 for r in rows if r.get("beyond_noise"))
        gains = sorted({r["min_gain"] for r in rows if r.get("min_gain")})
        by = f" and by at least {'/'.join(f'{g:g}' for g in gains)} pp" if gains else ""
        tail.append(
            f"confirmed over fresh seeds: a tuned configuration beats the default beyond noise "
            f"(one-sided paired t-test, p < {LEVEL}, split {FIRST_LEVEL:g} + "
            f"{LEVEL - FIRST_LEVEL:g} over a race's two looks){by} in {beyond} of {len(rows)} "
            "pairs"
        )
    return "\n".join([*layout(lines, left=(0, 8, 9, 10)), *tail]) + "\n"


def client_status_table(rows: list[dict]) -> str:
    """The client studies' lines of ``dkd-tune status`` (head 2's gain over the client's
    accuracy before KD)."""
    if not rows:
        return ""
    head = ("study", "neighbours", "finished", "failed", "pruned", "best", "default",
            "improvement", "best configuration")  # fmt: skip
    lines = [head] + [
        (r["study"], ",".join(map(str, r["neighbours"])), _budget(r), str(r["failed"]),
         str(r["pruned"]), gain(r["best_gain"]), gain(r["default_gain"]),
         gain(r["improvement"]), client_config(r))
        for r in rows
    ]  # fmt: skip
    better = sum(1 for r in rows if r["improvement"] is not None and r["improvement"] > 0)
    return "\n".join([
        *layout(lines, left=(0, 1, 8)),
        f"neighbourhood mode: gain = head 2 after the round - the client's accuracy before KD; "
        f"tuning beats the default (T=1, a=0.5, kl/avg) for {better} of {len(rows)} clients",
    ]) + "\n"  # fmt: skip


def mean_std(cell: Cell | None) -> str:
    """A cell's accuracy, mean ± std over its seeds."""
    if cell is None:
        return "-"
    return pm(cell.accuracy, cell.accuracy_std, signed=False)


def compare_rows(cells: Sequence[Cell]) -> tuple[list[str], list[list[str]]]:
    """The compare table's head and rows: per divergence × aggregation, for each federation its
    accuracy (mean ± std over seeds, %) and seconds per round (the text and the HTML views)."""
    feds = list(dict.fromkeys((c.federation, c.partition) for c in cells))
    by = {(c.federation, c.divergence, c.aggregation): c for c in cells}
    head = ["divergence", "aggregation"]
    for _, partition in feds:
        head += [f"{partition} accuracy (%)", "s/round"]
    rows = []
    for divergence in DIVERGENCES:
        for aggregation in AGGREGATIONS:
            row = [divergence, aggregation]
            for fed, _ in feds:
                cell = by.get((fed, divergence, aggregation))
                s = None if cell is None else cell.seconds_per_round
                row += [mean_std(cell), "-" if s is None else f"{s:.1f}"]
            rows.append(row)
    return head, rows


def compare_table(cells: Sequence[Cell]) -> str:
    """The comparison as text, with each federation's best cell and spread."""
    if not cells:
        return "no compare studies in this storage: run dkd-tune compare first\n"
    head, rows = compare_rows(cells)
    text = layout([head, *rows], left=(0, 1))
    seeds = sorted({c.n for c in cells})
    text.append(
        f"accuracy: head 2 after one round, mean over the clients, then mean ± std over "
        f"{'/'.join(map(str, seeds))} seed(s); s/round: every client's round, one after another"
    )
    for fed, partition in dict.fromkeys((c.federation, c.partition) for c in cells):
        done = [c for c in cells if c.federation == fed and c.accuracy is not None]
        if done:
            best = max(done, key=lambda c: c.accuracy)
            spread = [c.accuracy for c in done]
            text.append(
                f"{partition} ({fed}): best {best.divergence}/{best.aggregation} "
                f"{best.accuracy:.2f}%, spread over cells {max(spread) - min(spread):.2f} pp"
            )
    return "\n".join(text) + "\n"
