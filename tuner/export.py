"""Per-pair results read back from the database: the rows of ``status`` and ``export``.

For each pair study: trial counts, the best trial (its parameters, gain, student and teacher),
and the default trial's gain for the same student (the same position), so ``improvement`` is
what tuning added over T = 1, α = 0.5 for that direction of distillation.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import optuna
from optuna.trial import TrialState

from .budget import count_trials
from .errors import UsageError

PARAMS = ("temperature", "alpha", "divergence", "transfer_set", "position", "aggregation")
FORMATS = ("json", "csv")


def pair_studies(
    storage: optuna.storages.RDBStorage, federation: str | None = None
) -> list[optuna.study.FrozenStudy]:
    """The dkd-tune pair studies in the storage (those with a federation hash), sorted by pair."""
    studies = [
        s
        for s in storage.get_all_studies()
        if "federation_hash" in s.user_attrs
        and "pair" in s.user_attrs
        and (federation is None or s.user_attrs.get("federation") == federation)
    ]
    return sorted(studies, key=lambda s: (s.user_attrs["federation"], *s.user_attrs["pair"]))


def pair_rows(storage: optuna.storages.RDBStorage, federation: str | None = None) -> list[dict]:
    """One dict per pair study: counts, best trial and the same-position default."""
    studies = pair_studies(storage, federation)
    counts = count_trials(storage, [s._study_id for s in studies])
    rows = []
    for s in studies:
        trials = storage.get_all_trials(s._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        c = counts[s._study_id]
        a, b = s.user_attrs["pair"]
        defaults = {t.user_attrs["default"]: t for t in trials if "default" in t.user_attrs}
        best = max(trials, key=lambda t: (t.value, -t.number), default=None)
        row: dict[str, Any] = {
            "study": s.study_name,
            "federation": s.user_attrs["federation"],
            "federation_hash": s.user_attrs["federation_hash"],
            "pair": f"{a}-{b}",
            "finished": c.finished,
            "complete": c.complete,
            "pruned": c.pruned,
            "running": c.running,
            "failed": c.failed,
            "budget": s.user_attrs.get("run", {}).get("budget"),
            "student": None,
            "teacher": None,
            "trial": None,
            "best_params": None,
            "best_gain": None,
            "default_gain": None,
            "improvement": None,
            "default_gain_a": _value(defaults.get("a")),
            "default_gain_b": _value(defaults.get("b")),
        }
        if best is not None:
            default = defaults.get(best.params.get("position"))
            row.update(
                student=best.user_attrs.get("student"),
                teacher=best.user_attrs.get("teacher"),
                trial=best.number,
                best_params=dict(best.params),
                best_gain=best.value,
                default_gain=_value(default),
                improvement=None if default is None else best.value - default.value,
            )
        rows.append(row)
    return rows


def _value(trial: optuna.trial.FrozenTrial | None) -> float | None:
    return None if trial is None else trial.value


def render(rows: list[dict], fmt: str) -> str:
    """Rows as JSON (a list, params nested) or CSV (one column per parameter)."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt != "csv":
        raise UsageError(f"unknown export format {fmt!r}: choose json or csv")
    out = io.StringIO()
    # Pair rows and neighbourhood client rows (tuner.neighbourhood) have different keys.
    keys = dict.fromkeys(k for row in rows for k in row) if rows else _empty()
    columns = [k for k in keys if k != "best_params"]
    columns += list(PARAMS)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k != "best_params"}
        flat.update({p: (row["best_params"] or {}).get(p, "") for p in PARAMS})
        writer.writerow({k: "" if v is None else v for k, v in flat.items()})
    return out.getvalue()


def _empty() -> dict:
    return dict.fromkeys(
        [
            "study",
            "federation",
            "federation_hash",
            "pair",
            "finished",
            "complete",
            "pruned",
            "running",
            "failed",
            "budget",
            "student",
            "teacher",
            "trial",
            "best_params",
            "best_gain",
            "default_gain",
            "improvement",
            "default_gain_a",
            "default_gain_b",
        ]
    )


def status_table(rows: list[dict]) -> str:
    """The human summary ``dkd-tune status`` prints."""
    if not rows:
        return "no dkd-tune studies in this storage yet: run dkd-tune to start one\n"

    def gain(v: float | None) -> str:
        return "-" if v is None else f"{v:+.2f}"

    head = (
        "study",
        "finished",
        "running",
        "failed",
        "pruned",
        "best",
        "default",
        "improvement",
        "best configuration",
    )
    lines = [head]
    for r in rows:
        p = r["best_params"] or {}
        config = (
            f"{r['student']}<-{r['teacher']} T={p['temperature']:.3g} a={p['alpha']:.2f} "
            f"{p['divergence']} {p['transfer_set']}"
            + (f"/{p['aggregation']}" if "aggregation" in p else "")
            if p
            else "-"
        )
        budget = f"/{r['budget']}" if r["budget"] else ""
        lines.append(
            (
                r["study"],
                f"{r['finished']}{budget}",
                str(r["running"]),
                str(r["failed"]),
                str(r["pruned"]),
                gain(r["best_gain"]),
                gain(r["default_gain"]),
                gain(r["improvement"]),
                config,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i in (0, 8) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    better = [r for r in rows if r["improvement"] is not None and r["improvement"] > 0]
    text.append(
        f"gains in percentage points; tuning beats the default in {len(better)} of "
        f"{len(rows)} pairs"
    )
    return "\n".join(text) + "\n"
