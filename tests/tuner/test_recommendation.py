"""Confirmation inside the run and the recommendation per pair (``--confirm K``): each pair's
best configurations and their same-student defaults re-run with K fresh seeds on the pool, and
the recommendation read from those runs, checked here against an independent computation."""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState
from tuner_helpers import db_digest, trials_of

from tuner import TuneOptions, pair_rows, render, tune
from tuner.cli import main
from tuner.read.answer import recommendation
from tuner.read.decision import LEVEL
from tuner.run.confirm import confirm
from tuner.store.records import PLAN_ATTR
from tuner.store.storage import get_storage
from tuner.strategies import STRATEGIES

PAIRS = ("0-1", "2-3")
SEEDS = 2  # df = 1: the t distribution is Cauchy, so the p-value has a closed form


@pytest.fixture(scope="module")
def confirmed(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    url = f"sqlite:///{tmp_path_factory.mktemp('recommend') / 'run.db'}"
    # --strategy fixed: these tests check the fixed strategy's candidates (its 3 best and their
    # defaults); the race's answer is tested in test_race_run.py.
    opts = TuneOptions(
        config=tiny["config"], bundles=tiny["bundles"], storage=url, pairs=",".join(PAIRS),
        trials=6, sampler="random", pruner="none", progress="quiet", confirm=SEEDS,
        strategy="fixed",
    )  # fmt: skip
    tune(opts, say=lambda _m: None)
    return {"url": url, "opts": opts}


def _by_candidate(url: str, pair: str) -> dict[int, list]:
    out: dict[int, list] = {}
    for t in trials_of(url, f"tiny/{pair}/confirm"):
        assert t.state == TrialState.COMPLETE
        out.setdefault(t.params["candidate"], []).append(t)
    return {n: sorted(ts, key=lambda t: t.params["seed"]) for n, ts in out.items()}


def test_each_pair_confirms_its_candidates_with_fresh_seeds_once(confirmed: dict) -> None:
    url = confirmed["url"]
    storage = get_storage(url)
    for pair in PAIRS:
        trials = trials_of(url, f"tiny/{pair}")
        chosen = STRATEGIES["fixed"].candidates(trials)
        runs = _by_candidate(url, pair)
        assert sorted(runs) == sorted(t.number for t in chosen)  # top 3 + their defaults
        assert any("default" in t.user_attrs for t in chosen)
        plan = optuna.load_study(study_name=f"tiny/{pair}", storage=storage).user_attrs[PLAN_ATTR]
        for number, ts in runs.items():
            assert [t.params["seed"] for t in ts] == plan["seeds"]  # every seed once
            source = next(t for t in trials if t.number == number)
            assert {k: ts[0].params[k] for k in source.params} == source.params
        assert not set(plan["seeds"]) & {t.user_attrs.get("seed") for t in trials}  # fresh


def test_dkd_tune_confirm_finds_the_runs_own_confirmation(confirmed: dict, tmp_path) -> None:
    """``dkd-tune confirm`` plans what the run's confirmation planned: on a copy of the run it
    has nothing to add (every pair already confirmed, the database unchanged)."""
    import sqlite3

    copy = tmp_path / "copy.db"
    with sqlite3.connect(confirmed["url"].removeprefix("sqlite:///")) as src, \
            sqlite3.connect(copy) as dst:  # fmt: skip
        src.backup(dst)
    url = f"sqlite:///{copy}"
    digest = db_digest(url)
    outcomes = confirm(url, repeats=SEEDS, bundles=confirmed["opts"].bundles, say=lambda _m: None)
    assert [(o.state, o.reason) for o in outcomes] == [
        ("skipped", f"already confirmed ({SEEDS} seeds)")
    ] * len(PAIRS)
    assert db_digest(url) == digest
    rows = {r["pair"]: r for r in pair_rows(get_storage(confirmed["url"]))}
    for o in outcomes:
        assert o.record.recommended.trial == rows[o.study.split("/")[1]]["recommended_trial"]


def test_the_recommendation_matches_an_independent_paired_test(confirmed: dict) -> None:
    url = confirmed["url"]
    rows = {r["pair"]: r for r in pair_rows(get_storage(url))}
    for pair in PAIRS:
        trials = {t.number: t for t in trials_of(url, f"tiny/{pair}")}
        runs = _by_candidate(url, pair)
        gains = {n: [t.value for t in ts] for n, ts in runs.items()}
        means = {n: statistics.fmean(g) for n, g in gains.items()}
        best = max(runs, key=lambda n: (means[n], -n))  # a default competes as it is
        position = trials[best].params["position"]
        default = next(n for n in runs if trials[n].user_attrs.get("default") == position)
        row = rows[pair]
        if best == default:  # nothing tuned did better: the default, no test to run
            p = None
            assert row["p_value"] is None and row["confirmed_difference"] is None
        else:
            d = [c - b for c, b in zip(gains[best], gains[default], strict=True)]
            mean, sd = statistics.fmean(d), statistics.stdev(d)
            p = (
                0.5 - math.atan(mean / (sd / math.sqrt(SEEDS))) / math.pi
                if sd
                else float(mean <= 0)
            )
            assert row["p_value"] == pytest.approx(p, abs=1e-9)
            assert row["confirmed_difference"] == pytest.approx(means[best] - means[default])
        beyond = p is not None and p < LEVEL
        assert row["beyond_noise"] == beyond
        chosen = best if beyond else default
        assert row["recommended_trial"] == chosen and row["seeds"] == SEEDS
        assert row["recommended_is_default"] == (chosen == default)
        assert row["recommended_gain_mean"] == pytest.approx(means[chosen])
        assert row["confirmed_default_gain_mean"] == pytest.approx(means[default])
        forgetting = [t.user_attrs["forgetting"] for t in runs[chosen]]
        assert row["recommended_forgetting_mean"] == pytest.approx(statistics.fmean(forgetting))
    table = list(csv.DictReader(io.StringIO(render(list(rows.values()), "csv"))))
    for line in table:
        row = rows[line["pair"]]
        assert float(line["recommended_temperature"]) == row["recommended_params"]["temperature"]
        assert line["beyond_noise"] == str(row["beyond_noise"])


def test_max_forgetting_admits_only_candidates_that_forget_little(confirmed: dict) -> None:
    url = confirmed["url"]
    storage = get_storage(url)
    study = next(s for s in storage.get_all_studies() if s.study_name == "tiny/0-1")
    trials = trials_of(url, "tiny/0-1")
    runs = trials_of(url, "tiny/0-1/confirm")
    free = recommendation(study, trials, runs, min_gain=0.0)
    assert recommendation(study, trials, runs, max_forgetting=1000.0, min_gain=0.0) == replace(
        free, max_forgetting=1000.0
    )
    # No tuned one admitted.
    none = recommendation(study, trials, runs, max_forgetting=-1000.0, min_gain=0.0)
    assert none.recommends_default and none.p_value is None
    assert not none.beyond_noise and none.difference is None


def test_a_rerun_adds_nothing(confirmed: dict) -> None:
    before = db_digest(confirmed["url"])
    tune(confirmed["opts"], say=lambda _m: None)
    assert db_digest(confirmed["url"]) == before


def test_status_shows_the_recommendation(confirmed: dict, capsys) -> None:
    assert main(["status", "--storage", confirmed["url"], "--wide"]) == 0
    out = capsys.readouterr().out
    assert "recommended (confirmed)" in out and f"{SEEDS} seeds" in out
    assert main(["status", "--storage", confirmed["url"]]) == 0
    answer = capsys.readouterr().out  # answer first: the confirmed configuration and its seeds
    # No tuned one beat the default: the default's confirmed line, its answer read.
    assert f"default ({SEEDS} seeds)  | " in answer and "not confirmed yet" not in answer
    assert all(len(line) <= 120 for line in answer.splitlines())
    main(["status", "--storage", confirmed["url"], "--wide"])
    out = capsys.readouterr().out
    assert "beats the default beyond noise" in out


def test_max_forgetting_steers_tpe_with_a_constraint(opts) -> None:
    o = opts(pairs="0-1", trials=4, max_forgetting=1.5)
    tune(o, say=lambda _m: None)
    done = [t for t in trials_of(o.storage, "tiny/0-1") if t.state == TrialState.COMPLETE]
    assert done
    for t in done:  # feasible (<= 0) exactly when it forgot at most 1.5 pp
        assert t.constraints == {"forgetting": pytest.approx(t.user_attrs["forgetting"] - 1.5)}
    run = optuna.load_study(study_name="tiny/0-1", storage=get_storage(o.storage)).user_attrs
    assert run["run"]["max_forgetting"] == 1.5  # what a joining worker takes


def test_bad_confirm_options_are_refused_in_one_line(opts, capsys) -> None:
    o = opts()
    base = ["--config", o.config, "--bundles", o.bundles, "--storage", o.storage]
    for args, phrase in (
        (["--confirm", "1"], "--confirm 1: one seed gives no spread"),
        (["--max-forgetting", "500"], "--max-forgetting 500.0 is not a share"),
    ):
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and phrase in err, err
    assert db_digest(o.storage) is None


def test_report_and_notes_carry_the_recommendation(confirmed: dict, tmp_path) -> None:
    from optuna_dashboard import get_note

    url = confirmed["url"]
    out = tmp_path / "report.html"
    assert main(["report", "--storage", url, "--out", str(out)]) == 0
    page = out.read_text()
    assert 'id="recommended"' in page and page.count("<td>0-1</td>") >= 1
    rows = {r["pair"]: r for r in pair_rows(get_storage(url))}
    # The poster's figures on the recommendations, recomputed from the exported rows.
    tuned = [r for r in rows.values() if not r["recommended_is_default"]
             and (r["recommended_params"]["temperature"], r["recommended_params"]["alpha"])
             != (1.0, 0.5)]  # fmt: skip
    assert f"<b>{len(tuned)} of {len(rows)}</b> pairs" in page
    ratios = [r["recommended_gain_mean"] / r["confirmed_default_gain_mean"]
              for r in rows.values() if r["confirmed_default_gain_mean"] > 0]  # fmt: skip
    if ratios:
        assert f"<b>{statistics.fmean(ratios):.2f}× mean" in page
        assert f"over {len(ratios)} pairs ({len(rows) - len(ratios)} left out" in page
    for pair in PAIRS:
        note = get_note(optuna.load_study(study_name=f"tiny/{pair}", storage=url))
        assert "**Recommended**" in note and f"{rows[pair]['seeds']} seeds" in note
