"""How a configuration, a figure with its spread and a span of time are written, once for every
view (status, worker log lines, report, dashboard notes, confirm's lines, progress). No imports
from the rest of the tuner: the kinds use it too."""

from __future__ import annotations

from typing import Any


def config_line(params: dict[str, Any] | None, alpha: str = "α") -> str:
    """A configuration in one short line, e.g. ``T=0.54 α=0.21 ce public/avg`` (``alpha``: the
    label of α, ``a`` or ``alpha`` where the output is plain ASCII); ``-`` for none."""
    if not params:
        return "-"
    parts = [f"T={params['temperature']:.3g}", f"{alpha}={params['alpha']:.2f}",
             str(params["divergence"])]  # fmt: skip
    tail = params.get("transfer_set")
    if "aggregation" in params:
        tail = f"{tail}/{params['aggregation']}" if tail else None
        if tail is None:  # a client round: its transfer set is the run's, not a parameter
            parts[-1] += f"/{params['aggregation']}"
    return " ".join(parts + ([tail] if tail else []))


def pm(value: float | None, std: float | None = None, *, signed: bool = True,
       missing: str = "-") -> str:  # fmt: skip
    """A figure with ± its std where there is one, e.g. ``+1.23 ± 0.45`` (``missing`` for None)."""
    if value is None:
        return missing
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    return text + (f" ± {std:.2f}" if std is not None else "")


def duration(seconds: float) -> str:
    """A span of time in a few characters: ``42s``, ``3m07s``, ``2h05m`` (an ETA, a wall time)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


__all__ = ["config_line", "duration", "pm"]
