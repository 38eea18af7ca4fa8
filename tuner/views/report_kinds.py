"""The report's sections of the other kinds of study in the same storage: ``--mode neighbourhood``'s
client studies and ``dkd-tune compare``'s divergence × aggregation table (also the whole page of
``dkd-tune compare --report``)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from objectives import AGGREGATIONS, DIVERGENCES
from tuner.formats import config_line
from tuner.read.report_data import ReportData
from tuner.read.results import Cell
from tuner.views.html_parts import Section, figure, pp, table
from tuner.views.tables import compare_rows


def neighbourhood_section(d: ReportData) -> Section | None:
    """The client studies of ``--mode neighbourhood`` in the same storage, if any."""
    if not d.clients:
        return None
    return Section(
        "neighbourhood", "Neighbourhood mode: one study per client", clients_body(d.clients)
    )


def compare_section(d: ReportData) -> Section | None:
    """``dkd-tune compare``'s divergence × aggregation table in the same storage, if any."""
    if not d.compare:
        return None
    return compare_of(d.compare)


def compare_of(cells: Sequence[Cell]) -> Section:
    """The compare section of these cells (in the report and on ``compare --report``'s page)."""
    return Section("compare", "Divergence × aggregation (dkd-tune compare)", compare_body(cells))


def clients_body(rows: list[dict]) -> str:
    """The report's neighbourhood section: per client study the best and the default gain (head
    2 after the round minus the client's accuracy before KD) and the best configuration."""
    labels = [r["study"] for r in rows]
    fig = go.Figure(
        [
            go.Bar(name="default (T=1, a=0.5, kl/avg)", x=labels,
                   y=[r["default_gain"] for r in rows], marker_color="#8c8c8c"),
            go.Bar(name="best", x=labels, y=[r["best_gain"] for r in rows],
                   marker_color="#1f77b4"),
        ]
    )  # fmt: skip
    fig.update_layout(barmode="group", yaxis_title="gain of head 2 (pp)")

    lines = []
    for r in rows:
        best = config_line(r["best_params"], "a")
        lines.append(
            (r["study"], ",".join(map(str, r["neighbours"])), r["finished"], pp(r["default_gain"]),
             pp(r["best_gain"]), pp(r["improvement"]), best)
        )  # fmt: skip
    head = ("study", "neighbours", "finished", "default", "best", "improvement", "best config")
    caption = (
        "Neighbourhood mode: each client's head 2 learns from all of its neighbours at once; "
        "gain = head-2 test accuracy after the round minus the client's accuracy before KD."
    )
    return figure(fig, "neighbourhood", caption) + table(head, lines)


def compare_body(cells: Sequence[Cell]) -> str:
    """The report's compare section: accuracy (mean ± std over seeds) per divergence and
    aggregation for each federation, accuracy against seconds per round, and the table."""
    feds = list(dict.fromkeys((c.federation, c.partition) for c in cells))
    by = {(c.federation, c.divergence, c.aggregation): c for c in cells}
    colours = {"avg": "#1f77b4", "sum": "#ff7f0e"}
    bars = make_subplots(
        rows=1, cols=len(feds), subplot_titles=[f"{p} ({f})" for f, p in feds], shared_yaxes=True
    )
    trade = go.Figure()
    for col, (fed, partition) in enumerate(feds, start=1):
        for agg in AGGREGATIONS:
            row = [by.get((fed, d, agg)) for d in DIVERGENCES]
            bars.add_trace(
                go.Bar(
                    name=agg,
                    x=list(DIVERGENCES),
                    y=[None if c is None else c.accuracy for c in row],
                    error_y={"array": [0 if c is None else c.accuracy_std or 0 for c in row]},
                    marker_color=colours[agg],
                    showlegend=col == 1,
                    legendgroup=agg,
                ),
                row=1,
                col=col,
            )
            done = [c for c in row if c is not None and c.accuracy is not None]
            trade.add_trace(
                go.Scatter(
                    name=f"{partition} {agg}",
                    x=[c.seconds_per_round for c in done],
                    y=[c.accuracy for c in done],
                    text=[c.divergence for c in done],
                    mode="markers+text",
                    textposition="top center",
                    marker={
                        "color": colours[agg],
                        "symbol": "circle" if col == 1 else "diamond",
                        "size": 10,
                    },
                )
            )
    spread = [c.accuracy for c in cells if c.accuracy is not None]
    if spread:
        pad = max(0.5, (max(spread) - min(spread)) * 0.5)
        bars.update_yaxes(range=[min(spread) - pad, max(spread) + pad])
    bars.update_layout(barmode="group", yaxis_title="head-2 accuracy (%)")
    trade.update_layout(xaxis_title="seconds per round", yaxis_title="head-2 accuracy (%)")
    seeds = "/".join(map(str, sorted({c.n for c in cells})))
    head, rows = compare_rows(cells)
    return (
        figure(
            bars,
            "compare-accuracy",
            f"Head-2 test accuracy after one neighbourhood round, mean over the clients, mean ± "
            f"std over {seeds} seed(s), per divergence and aggregation (avg: one divergence to "
            "the mean of the neighbours' predictions; sum: one per neighbour).",
        )
        + figure(
            trade,
            "compare-tradeoff",
            "Accuracy against the seconds a round of every client takes (the accuracy / "
            "efficiency trade-off of the two aggregations).",
        )
        + table(head, rows)
    )
