"""How a configuration and a figure with its spread are written, once for every view (status
table, worker log lines, report, dashboard notes, confirm's lines). No imports from the rest of
the tuner: the kinds use it too."""

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


__all__ = ["config_line", "pm"]
