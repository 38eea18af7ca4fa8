"""The small HTML parts every page of the views is built from: the ``Section`` a page lists and the
escaping, number, table and figure helpers (shared by the page shell and its sections)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from tuner.formats import pm

_TEMPLATE = "plotly_white"


@dataclass(frozen=True)
class Section:
    """One part of the page: an anchor id, a heading and its HTML body."""

    id: str
    title: str
    body: str


def esc(value: object) -> str:
    return html.escape(str(value))


def pp(value: float | None, std: float | None = None) -> str:
    """A gain in percentage points, signed, with ± std where there is one."""
    return pm(value, std)


def num(value: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    """An HTML table; cells are escaped."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def figure(fig: go.Figure, fig_id: str, caption: str, height: int = 420) -> str:
    """A plotly figure (JavaScript embedded once per page, not here) with its caption."""
    fig.update_layout(
        template=_TEMPLATE, height=height, margin={"l": 60, "r": 20, "t": 40, "b": 60}
    )
    div = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"plot-{fig_id}",
        default_height=f"{height}px",
        config={"displaylogo": False, "responsive": True},
    )
    return f'<figure id="figure-{fig_id}">{div}<figcaption>{esc(caption)}</figcaption></figure>'
