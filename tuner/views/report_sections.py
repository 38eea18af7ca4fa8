"""The pair run's sections of the report page (the answer per pair, summary, heatmaps, bars,
ratios, best configurations, importances, forgetting, every pair, recommendations): one function
each, from the report's numbers (``report_data.ReportData``) to a ``Section``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tuner.read.decision import FIRST_LEVEL
from tuner.read.report_data import (
    NOISE_FALLBACK_PP,
    PairResult,
    ReportData,
    best_distribution,
    describe,
    recommended_figures,
    student_role,
)
from tuner.read.results import LEVEL
from tuner.views import status
from tuner.views.html_parts import Section, esc, figure, num, pp, table
from tuner.views.tables import race

_DEFAULT_COLOUR, _BEST_COLOUR = "#8c8c8c", "#1f77b4"


def _pair_label(p: PairResult) -> str:
    return f"{p.student}←{p.teacher}" if p.student is not None else f"{p.pair[0]}-{p.pair[1]}"


def _source_note(d: ReportData) -> str:
    s = d.summary
    if s.confirmed:
        seeds = "/".join(str(k) for k in s.repeats)
        text = (
            f"{s.confirmed} of {s.pairs} pairs are confirmed: their best and default figures are "
            f"means over {seeds} fresh seeds (dkd-tune confirm); the others are single tuning "
            "trials."
        )
    else:
        text = (
            "No pair is confirmed yet: every figure is a single tuning trial, and the best of many "
            "single trials is biased upwards. Run dkd-tune confirm --repeats 3 for means over "
            "fresh seeds."
        )
    if s.stale:
        text += (f" {s.stale} pair(s) have other candidates since their confirmation: rerun "
                 "dkd-tune confirm.")
    return text


def _noise_note(d: ReportData) -> str:
    return (
        "Noise (trial-to-trial): a confirmed pair's noise is the pooled standard deviation of "
        "its best's and its default's gain over the confirm seeds, √((s_best² + s_default²)/2); "
        "an unconfirmed pair uses the root mean square of the confirmed pairs' noise"
        + (f" ({d.pooled_noise:.2f} pp here)" if d.pooled_noise is not None else "")
        + f", or {NOISE_FALLBACK_PP:.2f} pp (measured on the embedded Fashion-MNIST default) "
        "while no pair is confirmed."
    )


def answer_section(d: ReportData) -> Section:
    """The page's first screen: what ``dkd-tune status`` prints, from the same rows and the same
    wording (tuner.views.status), one table row per pair."""
    rows = [(status.pair(r), status.answer(r), status.state(r)) for r in d.rows]
    head = ("pair student<-teacher", "answer: configuration, difference [interval] (seeds)",
            "state")  # fmt: skip
    body = (
        f"<p>{esc(status.summary(d.rows))}</p>"
        + table(head, rows, "answers")
        + "<p class='note'>The lines of dkd-tune status. A tuned configuration is recommended "
        "only where it beat the same-student default (T = 1, α = 0.5, kl, public) beyond noise "
        "on fresh seeds; otherwise the answer is the default.</p>"
    )
    return Section("answer", "The answer per pair", body)


def summary_section(d: ReportData) -> Section:
    """The headline answers: share of pairs needing other T/α, improvement ratios."""
    s = d.summary
    share = s.share_needing_tuning
    trials = f"{s.trials_min}" if s.trials_min == s.trials_max else f"{s.trials_min}–{s.trials_max}"
    g, a = s.gain_ratio, s.accuracy_ratio
    rows = [
        ("pairs (studies)", f"{s.pairs} ({s.compared} with a best and a same-student default)"),
        ("finished trials per pair", trials + (f" (budget {s.budget})" if s.budget else "")),
        (
            "pairs whose best has T ≠ 1 or α ≠ 0.5 and beats the default by more than the noise",
            f"{s.needs_tuning} of {s.compared}" + (f" ({share:.0%})" if share is not None else ""),
        ),
        ("pairs whose best beats the default by more than the noise", str(s.beyond_noise)),
        ("pairs whose best has T ≠ 1 or α ≠ 0.5", str(s.non_default_t_alpha)),
        ("pairs whose best beats the default at all", str(s.better)),
        (
            "best gain / default gain: mean, median",
            f"{num(g.mean, '.2f', '×')}, {num(g.median, '.2f', '×')} over {g.used} pairs "
            f"({g.excluded} left out: default gain ≤ 0)",
        ),
        (
            "best accuracy / default accuracy (after the round): mean, median",
            f"{num(a.mean, '.4f', '×')}, {num(a.median, '.4f', '×')} over {a.used} pairs",
        ),
        ("median noise (pp)", num(s.noise_median)),
        (
            "noise source (pairs)",
            ", ".join(f"{k}: {v}" for k, v in sorted(s.noise_sources.items())) or "-",
        ),
        ("confirmed pairs", f"{s.confirmed}" + (f" (seeds: {s.repeats})" if s.repeats else "")),
    ]
    body = (
        f"<p>{esc(_source_note(d))}</p>"
        + table(("question", "answer"), rows, "summary")
        + f"<p class='note'>{esc(_noise_note(d))}</p>"
    )
    return Section("summary", "Summary: tuning against T = 1, α = 0.5", body)


def _direction_matrix(d: ReportData, which: str) -> list[list[float | None]]:
    n = d.participants
    z: list[list[float | None]] = [[None] * n for _ in range(n)]
    for p in d.pairs:
        for r in p.directions:
            if which == "improvement":
                value = (
                    None
                    if r.best_gain is None or r.default_gain is None
                    else r.best_gain - r.default_gain
                )
            else:
                value = getattr(r, f"{which}_gain")
            z[r.student][r.teacher] = value
    return z


def heatmap_section(d: ReportData) -> Section:
    """Student × teacher heatmaps of the default gain, the best gain and their difference."""
    n = d.participants
    labels = [str(i) for i in range(n)]
    parts = []
    captions = {
        "default": "Default gain (pp) per direction: student row, teacher column, T = 1, α = 0.5.",
        "best": "Best gain (pp) per direction over that direction's trials (student row).",
        "improvement": "Best minus default gain (pp) per direction: what tuning added.",
    }
    for which, caption in captions.items():
        z = _direction_matrix(d, which)
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=labels,
                y=labels,
                zmid=0,
                colorscale="RdBu",
                texttemplate="%{z:+.1f}",
                hovertemplate="student %{y} ← teacher %{x}: %{z:+.2f} pp<extra></extra>",
                colorbar={"title": {"text": "pp"}},
            )
        )
        fig.update_xaxes(title_text="teacher", type="category")
        fig.update_yaxes(title_text="student", type="category", autorange="reversed")
        parts.append(figure(fig, f"heat-{which}", caption, height=400))
    note = (
        "Confirmed directions show means over the confirm seeds; others a single tuning trial."
        if d.summary.confirmed
        else "Each cell is a single tuning trial (no pair confirmed yet)."
    )
    body = f"<div class='grid3'>{''.join(parts)}</div><p class='note'>{esc(note)}</p>"
    return Section("heatmaps", "Default and best gain per direction", body)


def bars_section(d: ReportData) -> Section:
    """Per pair, default gain vs best gain, sorted by the best."""
    pairs = sorted(d.compared, key=lambda p: -(p.best_gain or 0.0))
    x = [f"{_pair_label(p)} ({p.pair[0]}-{p.pair[1]})" for p in pairs]

    def bar(which: str, colour: str) -> go.Bar:
        stds = [getattr(p, f"{which}_std") for p in pairs]
        return go.Bar(
            name=which,
            x=x,
            y=[getattr(p, f"{which}_gain") for p in pairs],
            marker_color=colour,
            error_y={"type": "data", "array": [s or 0.0 for s in stds], "visible": any(stds)},
        )

    fig = go.Figure([bar("default", _DEFAULT_COLOUR), bar("best", _BEST_COLOUR)])
    fig.update_layout(barmode="group", yaxis_title="gain (pp)", xaxis_title="student←teacher")
    caption = (
        "Per pair, the default's and the best configuration's gain for the best's student, "
        "sorted by the best gain (error bars: std over confirm seeds)."
    )
    return Section("bars", "Default vs best gain per pair", figure(fig, "bars", caption))


def ratio_section(d: ReportData) -> Section:
    """Best against default per pair, with the ratio lines the poster speaks of."""
    pairs = d.compared
    xs = [p.default_gain for p in pairs]
    ys = [p.best_gain for p in pairs]
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            text=[f"{p.pair[0]}-{p.pair[1]} ({_pair_label(p)})" for p in pairs],
            hovertemplate="%{text}: default %{x:+.2f}, best %{y:+.2f}<extra></extra>",
            marker={"size": 9, "color": _BEST_COLOUR},
            name="pairs",
        )
    )
    values = [v for v in xs + ys if v is not None] or [0.0]
    lo, hi = min(0.0, *values), max(values)
    fig.add_trace(
        go.Scatter(
            x=[lo, hi], y=[lo, hi], mode="lines", name="best = default", line={"dash": "dot"}
        )
    )
    if hi > 0:
        fig.add_trace(
            go.Scatter(
                x=[0, hi / 5],
                y=[0, hi],
                mode="lines",
                name="best = 5 × default",
                line={"dash": "dash"},
            )
        )
    fig.update_layout(xaxis_title="default gain (pp)", yaxis_title="best gain (pp)")
    caption = (
        "Each pair's best gain against its default gain for the same student; above the dotted "
        "diagonal tuning helped, the dashed line is 5× the default."
    )
    g, a = d.summary.gain_ratio, d.summary.accuracy_ratio
    rows = [
        ("gain", num(g.mean, ".3f"), num(g.median, ".3f"), g.used, g.excluded),
        ("accuracy after the round", num(a.mean, ".4f"), num(a.median, ".4f"), a.used, a.excluded),
    ]
    body = figure(fig, "ratios", caption) + table(
        ("best / default", "mean", "median", "pairs used", "pairs left out"), rows
    )
    body += (
        "<p class='note'>A gain ratio needs a default that gains: pairs whose default gain is "
        "≤ 0 are left out of it (their improvement is in the per-pair table).</p>"
    )
    return Section("ratios", "Improvement ratios", body)


def _temperature_bins(values: Sequence[float]) -> dict[str, int]:
    """Counts per power-of-two temperature band (T is searched on a log scale)."""
    out: dict[str, int] = {}
    for v in sorted(values):
        k = math.floor(math.log2(v))
        label = f"{2.0**k:g}–{2.0 ** (k + 1):g}"
        out[label] = out.get(label, 0) + 1
    return out


def _alpha_bins(values: Sequence[float]) -> dict[str, int]:
    """Counts per fifth of [0, 1] (α = 1 falls in the last)."""
    out = {f"{i / 5:.1f}–{(i + 1) / 5:.1f}": 0 for i in range(5)}
    for v in values:
        i = min(int(v * 5), 4)
        out[f"{i / 5:.1f}–{(i + 1) / 5:.1f}"] += 1
    return out


def distribution_section(d: ReportData) -> Section:
    """What the best configurations look like over pairs."""
    best = [p for p in d.pairs if p.best_params]
    roles: dict[str, int] = {}
    for p in best:
        role = student_role(p) or "n/a"
        roles[role] = roles.get(role, 0) + 1
    panels = {
        "temperature": _temperature_bins([p.best_params["temperature"] for p in best]),
        "α": _alpha_bins([p.best_params["alpha"] for p in best]),
        "divergence": best_distribution(best, "divergence"),
        "transfer set": best_distribution(best, "transfer_set"),
        "student is the": dict(sorted(roles.items())),
    }
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels))
    for i, counts in enumerate(panels.values(), start=1):
        fig.add_trace(
            go.Bar(x=list(counts), y=list(counts.values()), marker_color=_BEST_COLOUR), 1, i
        )
    fig.update_layout(showlegend=False, yaxis_title="pairs")
    caption = (
        "Over pairs, the best configuration's temperature, α, divergence, transfer set and "
        "whether its student is the less (weaker) or more accurate member."
    )
    rows = [
        (name, ", ".join(f"{value}: {count}" for value, count in counts.items() if count))
        for name, counts in panels.items()
    ]
    body = figure(fig, "distributions", caption, height=380) + table(
        ("best configuration's", "pairs per value"), rows
    )
    return Section("distributions", "The best configurations", body)


def importance_section(d: ReportData) -> Section:
    """Optuna's parameter importances, averaged over pairs."""
    if not d.importances:
        body = "<p>Not enough complete trials in any pair to compute parameter importances.</p>"
        return Section("importances", "Parameter importances", body)
    names = list(d.importances)
    fig = go.Figure(
        go.Bar(
            x=[d.importances[k] for k in names][::-1],
            y=names[::-1],
            orientation="h",
            marker_color=_BEST_COLOUR,
        )
    )
    fig.update_layout(xaxis_title="mean importance (each pair's sum to 1)")
    caption = (
        f"Optuna's parameter importances (PED-ANOVA) per pair, averaged over the "
        f"{d.importance_pairs} pairs where they can be computed."
    )
    rows = [(k, f"{v:.3f}") for k, v in d.importances.items()]
    body = figure(fig, "importances", caption, height=320) + table(
        ("parameter", "mean importance"), rows
    )
    return Section("importances", "Parameter importances pooled over pairs", body)


def forgetting_section(d: ReportData) -> Section:
    """Every complete trial's forgetting against its gain, by transfer set."""
    fig = go.Figure()
    rows = []
    for ts in sorted({t.transfer_set for t in d.trials}):
        pts = [t for t in d.trials if t.transfer_set == ts]
        fig.add_trace(
            go.Scatter(
                x=[t.gain for t in pts],
                y=[t.forgetting for t in pts],
                mode="markers",
                name=ts,
                text=[f"{t.study} #{t.number} {t.divergence}" for t in pts],
                hovertemplate="%{text}: gain %{x:+.2f}, forgetting %{y:+.2f}<extra></extra>",
                marker={"size": 6, "opacity": 0.7},
            )
        )
        n = len(pts)
        rows.append(
            (
                ts,
                n,
                f"{sum(t.gain for t in pts) / n:+.2f}",
                f"{sum(t.forgetting for t in pts) / n:+.2f}",
            )
        )
    fig.update_layout(xaxis_title="gain (pp)", yaxis_title="forgetting (pp, local accuracy lost)")
    caption = (
        "Forgetting (local accuracy before − after) against gain for every complete trial, "
        "coloured by transfer set."
    )
    body = figure(fig, "forgetting", caption) + table(
        ("transfer set", "trials", "mean gain (pp)", "mean forgetting (pp)"), rows
    )
    return Section("forgetting", "Forgetting against gain", body)


def pairs_section(d: ReportData) -> Section:
    """Every pair's numbers."""
    rows = []
    for p in d.pairs:
        rows.append(
            (
                f"{p.pair[0]}-{p.pair[1]}",
                _pair_label(p),
                describe(p.best_params),
                pp(p.default_gain, p.default_std),
                pp(p.best_gain, p.best_std),
                pp(p.margin),
                f"{p.noise:.2f} ({p.noise_source})",
                "yes" if p.needs_tuning else "no",
                num(p.gain_ratio, ".2f", "×"),
                f"{num(p.default_accuracy)} → {num(p.best_accuracy)}",
                pp(p.best_forgetting),
                f"{p.finished}" + (f"/{p.budget}" if p.budget else ""),
                f"{p.repeats} seeds"
                if p.confirmed
                else ("stale" if p.stale_confirmation else "no"),
            )
        )
    head = (
        "pair",
        "student←teacher",
        "best configuration",
        "default gain",
        "best gain",
        "improvement",
        "noise (source)",
        "needs T/α tuning",
        "ratio",
        "accuracy default → best (%)",
        "best forgetting",
        "trials",
        "confirmed",
    )
    return Section("pairs", "Every pair", table(head, rows, "pairs"))


def recommendation_section(d: ReportData) -> Section | None:
    """What to use per pair: the candidates a run confirmed over fresh seeds, the recommended
    one (the default unless a tuned configuration beats it beyond noise), with its forgetting."""
    if not d.recommended:
        return None
    rows = []
    for r in d.recommended:
        what = "the default" if r["recommended_is_default"] else describe(r["recommended_params"])
        rows.append((
            r["pair"], f"{r['recommended_student']}←{r['recommended_teacher']}", what,
            pp(r["recommended_gain_mean"], r["recommended_gain_std"]),
            pp(r["confirmed_default_gain_mean"], r["confirmed_default_gain_std"]),
            pp(r["confirmed_difference"]), num(r["p_value"], ".3f"),
            "yes" if r["beyond_noise"] else "no",
            pp(r["recommended_forgetting_mean"], r["recommended_forgetting_std"]), r["seeds"],
            race(r),
        ))  # fmt: skip
    head = ("pair", "student←teacher", "recommended", "gain (pp)", "default gain (pp)",
            "best tuned − default", "p (one-sided paired t)", "beyond noise",
            "forgetting (pp)", "seeds", "race")  # fmt: skip
    beyond = sum(1 for r in d.recommended if r["beyond_noise"])
    needs, ratio = recommended_figures(d.recommended)
    gains = sorted({r["min_gain"] for r in d.recommended if r.get("min_gain")})
    by = f" by at least {'/'.join(f'{g:g}' for g in gains)} pp and" if gains else ""
    raced = any(r.get("rounds") is not None for r in d.recommended)
    what = "Each race's incumbent and" if raced else "Each pair's 3 best configurations and"
    intro = (
        f"<p>{what} the same-student default re-run with fresh seeds: a tuned configuration is "
        f"recommended only where it beats the default{by} a one-sided paired t-test over the "
        f"seeds puts it above the default (p &lt; {LEVEL}; a race's test looks after 3 seeds "
        f"at p &lt; {FIRST_LEVEL:g} and after all at p &lt; {LEVEL - FIRST_LEVEL:g}); {beyond} of "
        f"{len(d.recommended)} pairs. Gains and forgetting: mean ± std over the seeds; race: the "
        f"rounds the pair used and why it stopped.</p>"
        f"<p>The poster's figures on the recommendations: T ≠ 1 or α ≠ 0.5 recommended in "
        f"<b>{needs} of {len(d.recommended)}</b> pairs; recommended / default gain "
        f"<b>{num(ratio.mean, '.2f')}× mean, {num(ratio.median, '.2f')}× median</b> over "
        f"{ratio.used} pairs ({ratio.excluded} left out: their default gains nothing).</p>"
    )
    return Section("recommended", "Recommended per pair", intro + table(head, rows))
