"""``dkd-tune report``: one self-contained HTML page comparing every pair's best with the default;
here the page shell (``page``, ``render``) and the writers (``write_report``, ``write_page``).

The page is a list of sections, one function each (``SECTIONS``; the pair run's in
``report_sections``, the other kinds' in ``report_kinds``): a section takes the report's numbers
(``report_data.ReportData``) and returns a ``Section``, so another view is one more function
appended to the list. Plotly's JavaScript is embedded once, so the file opens with no network.
Every figure has a one-line caption; its numbers are also in a table.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import plotly.offline

from tuner.errors import UsageError
from tuner.read.report_data import ReportData, collect
from tuner.read.results import Cell, read_cells
from tuner.store.db import open_storage
from tuner.store.storage import mask
from tuner.views.html_parts import Section, esc, num
from tuner.views.report_kinds import compare_of, compare_section, neighbourhood_section
from tuner.views.report_sections import (
    answer_section,
    bars_section,
    distribution_section,
    forgetting_section,
    heatmap_section,
    importance_section,
    pairs_section,
    ratio_section,
    recommendation_section,
    summary_section,
)
from tuner.views.status import answer_table

DEFAULT_OUT = "report.html"

SectionFn = Callable[[ReportData], Section | None]

#: The page, in order. Append a function to add a section.
SECTIONS: list[SectionFn] = [
    answer_section,  # the first screen: the answer per pair, as dkd-tune status prints it
    summary_section,
    heatmap_section,
    bars_section,
    ratio_section,
    distribution_section,
    importance_section,
    forgetting_section,
    pairs_section,
    recommendation_section,
    neighbourhood_section,
    compare_section,
]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left}th{background:#f4f4f4}
figure{margin:.5em 0}figcaption{font-size:.9em;color:#444;margin-top:.2em}
.grid3{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:1em}
@media (max-width:1100px){.grid3{grid-template-columns:minmax(0,1fr)}}
.note{font-size:.9em;color:#555}nav a{margin-right:1em}
"""

# Each plot is drawn as the parser reaches it, before the rest of its row exists; once the page
# is laid out, responsive plots are re-fitted to their final boxes.
_REFIT = "window.addEventListener('load', () => window.dispatchEvent(new Event('resize')));"


def page(title: str, intro: str, sections: Sequence[Section]) -> str:
    """The one page shell every view fills: a title, an intro line, a navigation bar and the
    sections (plotly.js inline: no network needed to open it)."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head>"
        f"<body><h1>{esc(title)}</h1><p>{intro}</p><nav>{nav}</nav>{body}"
        f"<script>{_REFIT}</script></body></html>"
    )


def render(data: ReportData, sections: Sequence[SectionFn] = SECTIONS) -> str:
    """The whole report as one HTML string."""
    done = [s for s in (fn(data) for fn in sections) if s is not None]
    intro = (
        f"Federation {esc(data.federation)} ({esc(data.federation_hash)}), {data.participants} "
        f"participants, storage {esc(data.storage)}. Gains are test accuracy after one round of "
        "KD minus before, in percentage points (pp)."
    )
    return page(f"dkd-tune report: {data.federation}", intro, done)


def summary_lines(d: ReportData) -> list[str]:
    """What ``dkd-tune report`` prints: the answer per pair (``dkd-tune status``'s lines, the
    page's first section), then the headline figures."""
    s, g, a = d.summary, d.summary.gain_ratio, d.summary.accuracy_ratio
    share = f" ({s.share_needing_tuning:.0%})" if s.share_needing_tuning is not None else ""
    trials = f"{s.trials_min}" if s.trials_min == s.trials_max else f"{s.trials_min}-{s.trials_max}"
    return [
        *answer_table(d.rows).splitlines(),
        f"pairs: {s.pairs}; finished trials per pair: {trials}; confirmed pairs: {s.confirmed}"
        + (f" ({'/'.join(map(str, s.repeats))} seeds)" if s.repeats else ""),
        f"best has T != 1 or alpha != 0.5 and beats the default beyond noise: "
        f"{s.needs_tuning} of {s.compared}{share}",
        f"best gain / default gain: mean {num(g.mean, '.2f', 'x')}, median "
        f"{num(g.median, '.2f', 'x')} over {g.used} pairs ({g.excluded} with default gain <= 0 "
        "left out)",
        f"best accuracy / default accuracy: mean {num(a.mean, '.4f', 'x')}, median "
        f"{num(a.median, '.4f', 'x')}",
        f"noise: median {num(s.noise_median)} pp ("
        + ", ".join(f"{k}: {v}" for k, v in sorted(s.noise_sources.items()))
        + ")",
    ]


def write_file(target: Path, text: str, flag: str) -> None:
    """Write a page atomically (never half a file), readable by its owner only (0600);
    one line naming ``flag`` if it cannot be written."""
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write {flag} {target}: folder {folder} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp's 0600 is kept: the page may show a (masked) storage URL and study names
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise UsageError(
            f"cannot write {flag} {target} ({exc.strerror or exc}): pick a writable path"
        ) from None


def write_report(
    url: str, out: str | Path = DEFAULT_OUT, federation: str | None = None
) -> ReportData:
    """Read the storage, write the page to ``out`` atomically (never half a file); return the
    numbers it shows."""
    target = Path(out)
    data = collect(open_storage(url, read_only=True, live=False), url, federation)
    write_file(target, render(data), "--out")
    return data


def write_page(url: str, out: str) -> list[Cell]:
    """``dkd-tune compare --report FILE``: a self-contained page with the compare section."""
    cells = read_cells(open_storage(url))
    if not cells:
        raise UsageError(f"no compare studies in {mask(url)}: run dkd-tune compare first")
    text = page(
        "dkd-tune compare: divergence x aggregation",
        f"Storage {esc(mask(url))}.",
        [compare_of(cells)],
    )
    write_file(Path(out), text, "--report")
    return cells
