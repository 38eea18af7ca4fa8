"""``--strategy federation``: which configurations a pair study takes from the settled pairs of
its federation (tuner.search.federation), when it may settle sooner, and that a real run takes
them once, from the stored rounds of the pair before it."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from tuner_helpers import trials_of

from tuner.cli import main
from tuner.read.results import pair_rows
from tuner.search import federation, race
from tuner.search.federation import FEDERATION_ATTR, held, proposals
from tuner.search.race import SEED_ATTR, race_state
from tuner.search.space import parse_space
from tuner.strategies import STRATEGIES
from tuner.views.tables import race as race_words

DIST = {
    "temperature": FloatDistribution(0.05, 100.0, log=True),
    "alpha": FloatDistribution(0.0, 1.0),
    "divergence": CategoricalDistribution(["kl", "js"]),
    "transfer_set": CategoricalDistribution(["public"]),
    "position": CategoricalDistribution(["a", "b"]),
}
SPACE = parse_space({"temperature": [0.25, 16.0]}, "test")
WEAKER_A = {"accuracy_a": 0.4, "accuracy_b": 0.7}  # the student at a is the weaker member
WEAKER_B = {"accuracy_a": 0.8, "accuracy_b": 0.5}


def _round(number: int, t: float, value: float | None, seed: int = 0, position: str = "a",
           **attrs) -> object:  # fmt: skip
    params = {"temperature": t, "alpha": 0.5, "divergence": "kl", "transfer_set": "public",
              "position": position}  # fmt: skip
    state = TrialState.COMPLETE if value is not None else TrialState.WAITING
    trial = create_trial(params=params, distributions=DIST, value=value, state=state,
                         user_attrs={SEED_ATTR: seed, **attrs})  # fmt: skip
    trial.number = number
    return trial


def _sibling(lead: float, t: float) -> list:
    """A settled race at a: the default at +1 on two seeds, ``t`` ahead by ``lead`` on both."""
    return [_round(0, 1.0, 1.0, default="a"), _round(1, t, 1.0 + lead),
            _round(2, t, 1.0 + lead, seed=1), _round(3, 1.0, 1.0, seed=1)]  # fmt: skip


def test_proposals_are_settled_incumbents_by_lead_carried_by_role_once() -> None:
    others = [
        ("fed/0-1", WEAKER_A, _sibling(2.0, 4.0)),
        ("fed/0-2", WEAKER_A, _sibling(5.0, 8.0)),
        ("fed/0-3", WEAKER_A, _sibling(-1.0, 2.0)),  # its default leads: nothing to offer
        ("fed/0-4", WEAKER_A, _sibling(9.0, 50.0)),  # outside this study's space
        ("fed/0-5", WEAKER_A, [_round(0, 1.0, 3.0, default="a")]),  # the default is incumbent
    ]
    own = [_round(0, 1.0, None, default="a"), _round(1, 1.0, None, position="b", default="b")]
    got = proposals(WEAKER_B, own, SPACE, others)
    # The weaker student is at b here: the configurations move there, the largest lead first.
    assert [(p["temperature"], p["position"]) for p, _ in got] == [(8.0, "b"), (4.0, "b")]
    assert [a[FEDERATION_ATTR] for _, a in got] == ["fed/0-2#1", "fed/0-1#1"]
    assert all(a[SEED_ATTR] == 0 for _, a in got)  # each a configuration's first round
    # What the study already holds (run or queued) is not proposed again; k bounds the count.
    again = proposals(WEAKER_B, [*own, _round(2, 8.0, None, position="b")], SPACE, others)
    assert [p["temperature"] for p, _ in again] == [4.0]
    assert len(proposals(WEAKER_B, own, SPACE, others, k=1)) == 1


def test_a_pair_settles_sooner_only_where_the_federations_proposals_hold(monkeypatch) -> None:
    # The knob at a shorter setting than the race's (it ships at the race's: bench/RESULTS.md).
    monkeypatch.setattr(federation, "FLOOR", 8)
    monkeypatch.setattr(federation, "PATIENCE", 4)
    # The default, the federation's proposal ahead of it on 3 seeds, then only losers.
    taken = {FEDERATION_ATTR: "fed/0-1#1"}
    rounds = [_round(0, 1.0, 5.0, default="a"), _round(1, 4.0, 6.0, **taken),
              _round(2, 4.0, 6.0, seed=1), _round(3, 1.0, 5.0, seed=1),
              _round(4, 4.0, 6.0, seed=2)]  # fmt: skip
    n = max(federation.PATIENCE, federation.FLOOR - 2)
    trials = rounds + [_round(5 + k, 0.3 + k / 10, 1.0) for k in range(n)]
    state = race_state(trials)
    assert held(state) and federation.FLOOR <= state.proposals < race.MIN_CONFIGURATIONS
    assert state.settles(federation.PATIENCE, federation.FLOOR) and not state.settled
    assert STRATEGIES["federation"].before_claim(trials, 200).stopped == "settled"
    assert STRATEGIES["race"].before_claim(trials, 200).stopped is None  # alone: the floor of 12
    # An own proposal took the lead: the federation's guess did not hold here, so the race's
    # rule applies, though the shorter one would stop.
    better = [_round(20 + j, 9.0, 9.0, seed=j) for j in range(4)]
    later = [_round(30 + k, 2.0 + k / 10, 1.0) for k in range(federation.PATIENCE)]
    state = race_state(trials + better + later)
    assert not held(state) and state.settles(federation.PATIENCE, federation.FLOOR)
    assert STRATEGIES["federation"].before_claim(trials + better + later, 200).stopped is None


def test_a_second_pair_starts_from_the_first_pairs_stored_rounds_once(opts, monkeypatch) -> None:
    # A short race (floor 5, patience 2; at --seed 2 the first pair finds a configuration ahead
    # of its default in 10 rounds) so the test takes seconds: what is tested is what the second
    # pair takes from the first, not the race's constants. --workers 1 runs in this process, so
    # the patched constants are the ones it decides by.
    monkeypatch.setattr(race, "MIN_CONFIGURATIONS", 5)
    monkeypatch.setattr(race, "PATIENCE", 2)
    o = opts()
    argv = ["--config", o.config, "--bundles", o.bundles, "--storage", o.storage, "--strategy",
            "federation", "--confirm", "0", "--workers", "1", "--seed", "2", "--progress",
            "quiet"]  # fmt: skip
    assert main([*argv, "--pairs", "0-1", "--trials", "40"]) == 0
    first = race_state(trials_of(o.storage, "tiny/0-1"))
    assert federation.margin(first) is not None  # it has a configuration ahead of its default
    assert main([*argv, "--pairs", "0-2", "--trials", "4"]) == 0
    second = trials_of(o.storage, "tiny/0-2")
    taken = [t for t in second if FEDERATION_ATTR in t.user_attrs]
    # Its first proposal after its two defaults is the first pair's incumbent, once.
    assert [t.number for t in taken] == [2]
    assert taken[0].user_attrs[FEDERATION_ATTR] == f"tiny/0-1#{first.incumbent.first.number}"
    assert {k: taken[0].params[k] for k in ("temperature", "alpha", "divergence")} == {
        k: first.incumbent.params[k] for k in ("temperature", "alpha", "divergence")}  # fmt: skip
    # A rerun that goes on racing the pair claims more trials and enqueues nothing again.
    assert main([*argv, "--pairs", "0-2", "--trials", "8"]) == 0
    rerun = trials_of(o.storage, "tiny/0-2")
    assert len(rerun) > len(second)
    assert [t.number for t in rerun if FEDERATION_ATTR in t.user_attrs] == [2]
    # Shown (issue 26 item 5): the pair's row says what the federation contributed, the first
    # pair's row that it raced before anything had settled.
    storage = optuna.storages.RDBStorage(o.storage)
    rows = {r["pair"]: r for r in pair_rows(storage)}
    storage.engine.dispose()
    state = race_state(rerun)
    assert rows["0-2"]["federation_proposals"] == 1
    assert rows["0-2"]["federation_incumbent"] == state.incumbent.first.user_attrs.get(
        FEDERATION_ATTR)  # fmt: skip
    # Its best guess's lead, from the trials: the proposal and its same-student default, each
    # a mean over the seeds (race rounds) both finished.
    def by_seed(params: dict) -> dict[int, float]:
        return {t.user_attrs[SEED_ATTR]: t.value for t in rerun
                if t.state == TrialState.COMPLETE and t.params == params}  # fmt: skip

    guess = by_seed(taken[0].params)
    position = taken[0].params["position"]
    default = by_seed(next(t.params for t in rerun if t.user_attrs.get("default") == position))
    seeds = sorted(set(guess) & set(default))[: min(len(guess), len(default))]
    expected = sum(guess[i] - default[i] for i in seeds) / len(seeds)
    assert abs(rows["0-2"]["federation_guess_lead"] - expected) < 1e-4
    assert rows["0-1"]["federation_proposals"] == 0 and rows["0-1"]["federation_incumbent"] is None
    assert "1 from the federation, its best guess" in race_words(rows["0-2"])
    assert "nothing from the federation" in race_words(rows["0-1"])


def test_one_run_serves_its_pairs_in_turn_so_the_later_ones_take_from_the_earlier(
    opts, monkeypatch
) -> None:
    """--pairs all in one run: the federation strategy staggers its pairs (the pool serves the
    first with work left), so pair 0-2 starts after 0-1 settled and takes its incumbent. Under
    the race's most-work-left order both would start at once and 0-2 would take nothing. The
    short race of the test above (its constants patched: --workers 1 runs in this process)."""
    monkeypatch.setattr(race, "MIN_CONFIGURATIONS", 5)
    monkeypatch.setattr(race, "PATIENCE", 2)
    o = opts()
    argv = ["--config", o.config, "--bundles", o.bundles, "--storage", o.storage, "--strategy",
            "federation", "--confirm", "0", "--workers", "1", "--seed", "2", "--progress",
            "quiet", "--pairs", "0-1,0-2", "--trials", "16"]  # fmt: skip
    assert main(argv) == 0
    first, second = trials_of(o.storage, "tiny/0-1"), trials_of(o.storage, "tiny/0-2")
    assert min(t.datetime_start for t in second) >= max(t.datetime_complete for t in first)
    state = race_state(first)
    assert federation.margin(state) is not None
    taken = [t for t in second if FEDERATION_ATTR in t.user_attrs]
    assert [t.user_attrs[FEDERATION_ATTR] for t in taken] == [
        f"tiny/0-1#{state.incumbent.first.number}"
    ]
