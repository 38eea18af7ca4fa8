"""Dashboard notes: each pair study carries a markdown note that optuna-dashboard shows on its page.

The note says which pair it is, the default against the best (with the noise and whether the
figures are confirmed), and the configuration ``dkd-tune export`` gives for the pair. It is
rewritten when a run or ``dkd-tune confirm`` ends, from the same numbers as the report. Only
dkd-tune's own part is rewritten: it sits between ``OWN_START`` and ``OWN_END`` (HTML comments,
which the dashboard's markdown does not show), and whatever a user wrote outside them is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import optuna

from tuner.formats import pm
from tuner.read.report_data import PairResult, ReportData, collect, describe
from tuner.read.results import pair_studies
from tuner.search.race import STOPS
from tuner.views.tables import race, recommended


def _pp(value: float | None, std: float | None = None) -> str:
    return pm(value, std, missing="–")


def note_text(p: PairResult, data: ReportData, export_row: dict | None) -> str:
    """The markdown note of one pair study."""
    a, b = p.pair
    lines = [f"## Pair {a}-{b} of {data.federation}", ""]
    if p.best_params is None:
        lines.append("No complete trial yet: the default and the best appear when trials finish.")
        return "\n".join(lines) + "\n"
    figures = (
        f"means ± std over {p.repeats} fresh seeds (`dkd-tune confirm`)"
        if p.confirmed
        else "single tuning trials; `dkd-tune confirm --repeats 3` re-runs them with fresh seeds"
    )
    if p.stale_confirmation:
        figures += " (its candidates changed after the last confirm: rerun dkd-tune confirm)"
    lines += [
        f"Student **{p.student}** learns from teacher **{p.teacher}** in the best configuration.",
        "",
        "| | configuration | gain (pp) | accuracy after (%) | forgetting (pp) |",
        "|---|---|---|---|---|",
        f"| default | T=1 α=0.50 kl public | {_pp(p.default_gain, p.default_std)} | "
        f"{_num(p.default_accuracy)} | {_pp(p.default_forgetting)} |",
        f"| best (trial {p.best_trial}) | {describe(p.best_params)} | "
        f"{_pp(p.best_gain, p.best_std)} | {_num(p.best_accuracy)} | {_pp(p.best_forgetting)} |",
        "",
        f"Figures: {figures}.",
        "",
    ]
    if p.margin is not None:
        verdict = "beyond" if p.beyond_noise else "within"
        ratio = f", {p.gain_ratio:.2f}× the default's gain" if p.gain_ratio is not None else ""
        lines += [
            f"Improvement **{_pp(p.margin)} pp**{ratio}: {verdict} the noise of "
            f"{p.noise:.2f} pp ({p.noise_source}). T ≠ 1 or α ≠ 0.5: "
            f"{'yes' if p.non_default_t_alpha else 'no'}.",
            "",
        ]
    others = [d for d in p.directions if d.position != p.position]
    for d in others:
        lines += [
            f"Other direction {d.student} ← {d.teacher}: default {_pp(d.default_gain)}, "
            f"best {_pp(d.best_gain)} ({describe(d.best_params)}).",
            "",
        ]
    lines += [f"Trials: {p.finished} finished" + (f" of {p.budget}" if p.budget else "") + "."]
    if export_row is not None and export_row.get("rounds") is not None:
        stop = STOPS.get(export_row["stopped"], "still racing")
        lines += ["", f"Race: {race(export_row)}; stopped: {stop}."]
    if export_row is not None and export_row.get("recommended_gain_mean") is not None:
        lines += ["", f"**Recommended** (confirmed over fresh seeds): {recommended(export_row)}."]
    if export_row is not None:
        keep = ("pair", "student", "teacher", "best_params", "best_gain", "default_gain",
                "recommended_params", "recommended_gain_mean", "confirmed_difference",
                "confirmed_difference_ci", "p_value", "beyond_noise", "rounds",
                "stopped", "federation_proposals", "federation_incumbent",
                "federation_guess_lead", "grown_from")  # fmt: skip
        shown = {k: export_row[k] for k in keep if k in export_row}
        lines += [
            "",
            "What `dkd-tune export` gives for this pair:",
            "",
            "```json",
            json.dumps(shown, indent=2),
            "```",
        ]
    return "\n".join(lines) + "\n"


#: The markers around dkd-tune's part of a note; text outside them is the user's (issue 27).
OWN_START = "<!-- dkd-tune -->"
OWN_END = "<!-- /dkd-tune -->"


def merged_note(current: str, own: str) -> str:
    """The note with dkd-tune's part set to ``own`` and the user's text of ``current`` kept.

    A note of an older dkd-tune (no markers, its own heading and export block) is all dkd-tune's;
    any other unmarked text is the user's and stays after dkd-tune's part.
    """
    block = f"{OWN_START}\n{own.rstrip()}\n{OWN_END}"
    start = current.find(OWN_START)
    end = current.find(OWN_END, start + len(OWN_START)) if start >= 0 else -1
    if start >= 0 and end >= 0:
        return current[:start] + block + current[end + len(OWN_END) :]
    legacy = current.startswith("## Pair ") and (
        "What `dkd-tune export` gives" in current or "No complete trial yet" in current
    )
    user = "" if legacy else current.strip()
    return f"{block}\n\n{user}\n" if user else f"{block}\n"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def write_notes(
    storage: optuna.storages.RDBStorage, url: str, studies: Iterable[str] | None = None
) -> int:
    """Rewrite the dashboard note of the named pair studies (all if None; other names are not
    pair studies and have no note); return how many.

    The numbers come from the whole federation (the pooled noise needs every pair).
    """
    wanted = None if studies is None else set(studies)
    by_federation: dict[str, list[str]] = {}  # by federation hash: one name may hold two
    for s in pair_studies(storage):
        if wanted is None or s.study_name in wanted:
            by_federation.setdefault(s.user_attrs["federation_hash"], []).append(s.study_name)
    if not by_federation:
        return 0
    from optuna_dashboard import get_note, save_note  # heavy import (bottle): only where written

    written = 0
    for federation, names in by_federation.items():
        data = collect(storage, url, federation, importances=False)
        rows = {r["study"]: r for r in data.rows}
        for p in data.pairs:
            if p.study in names:
                study = optuna.load_study(study_name=p.study, storage=storage)
                current = get_note(study)
                text = merged_note(current, note_text(p, data, rows.get(p.study)))
                if current != text:  # an unchanged note is not saved again (a new version)
                    save_note(study, text)
                written += 1
    return written
