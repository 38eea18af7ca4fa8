"""``dkd-tune export``: the rows of tuner.read.results as JSON or CSV, the file users take home.

For each pair study: the recommendation (``recommended_*``: the configuration to use, confirmed
over fresh seeds against the same-student default, with ``beyond_noise`` saying whether it beats
it by at least ``min_gain`` beyond noise, ``confirmed_difference`` with its confidence interval
``confirmed_difference_ci`` (two-sided, at 1 − 2 × ``level``), ``p_value``, ``level`` (the
deciding look's test level: 0.05 with one look, 0.01 or 0.04 for a race's two) and ``seeds``
(how many it used)), the race (``rounds``,
``configurations``, the incumbent's trial, seeds and mean, and why it ``stopped``: ``settled`` or
``cap``; None for a fixed study), and the single-trial figures: trial counts, the best trial (its
parameters, gain, student and teacher) and the default trial's gain for the same student, so
``improvement`` is what the single best trial added over T = 1, α = 0.5 for that direction; and
when the pair's trials ran (``first_trial_start``, ``last_trial_complete``: ISO 8601, over the
pair study and its confirmation study).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from tuner.errors import UsageError
from tuner.views.terminal import printable

PARAMS = ("temperature", "alpha", "divergence", "transfer_set", "position", "aggregation")
FORMATS = ("json", "csv")
#: Configuration dicts of a row and the prefix of their CSV columns (the single best trial's
#: parameters keep their bare names, as before recommendations existed).
NESTED = {"best_params": "", "recommended_params": "recommended_"}


def render(rows: list[dict], fmt: str) -> str:
    """Rows as JSON (a list, params nested) or CSV (one column per parameter)."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt != "csv":
        raise UsageError(f"unknown export format {fmt!r}: choose json or csv")
    out = io.StringIO()
    # Pair rows and neighbourhood client rows have different keys; configurations (the single
    # best trial's, the recommended one's) become one column per parameter.
    keys = dict.fromkeys(k for row in rows for k in row) if rows else _empty()
    columns = [k for k in keys if k not in NESTED]
    columns += [f"{prefix}{p}" for key, prefix in NESTED.items() if key in keys for p in PARAMS]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: (json.dumps(v) if isinstance(v, list) else v)
                for k, v in row.items() if k not in NESTED}  # fmt: skip
        for key, prefix in NESTED.items():
            if key in keys:
                flat.update({f"{prefix}{p}": (row.get(key) or {}).get(p, "") for p in PARAMS})
        # Names from the storage may hold control characters; JSON escapes them already.
        writer.writerow({k: "" if v is None else printable(v) if isinstance(v, str) else v
                         for k, v in flat.items()})  # fmt: skip
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


def write_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` whole or not at all, private to its owner (mode 0600).

    A temporary file in the same folder then os.replace: a full disk leaves the previous
    export intact, and a shared machine's readers never see a partial or world-readable file.
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
