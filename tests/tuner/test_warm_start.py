"""Warm start across pairs (``--warm-start on``): which configurations a pair study takes from the
others, and that it takes them once, however many workers share the study."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from tuner_helpers import trials_of

from tuner import tune
from tuner.search.best import improvements
from tuner.search.space import SearchSpace, parse_space
from tuner.search.warm import WARM_ATTR, WARM_TRIALS, choose, warm_at

SPACE = SearchSpace()
DISTS = {
    "temperature": FloatDistribution(0.25, 32.0, log=True),
    "alpha": FloatDistribution(0.0, 1.0),
    "divergence": CategoricalDistribution(list(SPACE.divergence)),
    "transfer_set": CategoricalDistribution(list(SPACE.transfer_set)),
    "position": CategoricalDistribution(list(SPACE.position)),
    "aggregation": CategoricalDistribution(list(SPACE.aggregation)),
}


def _trial(number: int, value: float, default: str | None = None, **params):
    p = {"temperature": 1.0, "alpha": 0.5, "divergence": "kl", "transfer_set": "public",
         "position": "a", **params}  # fmt: skip
    t = create_trial(
        params=p,
        distributions={k: DISTS[k] for k in p},
        value=value,
        user_attrs={"default": default} if default else {},
    )
    t.number = number
    return t


def test_improvements_are_measured_against_the_same_position_default() -> None:
    trials = [
        _trial(0, 5.0, default="a"),
        _trial(1, 9.0, default="b", position="b"),
        _trial(2, 6.5, temperature=4.0),  # a: +1.5
        _trial(3, 8.0, temperature=2.0, position="b"),  # b: below its default
        _trial(4, 4.0, alpha=0.9),  # a: below
    ]
    got = {t.number: round(g, 6) for g, t in improvements(trials)}
    assert got == {2: 1.5}


def test_choose_ranks_by_improvement_carries_the_role_and_skips_what_does_not_fit() -> None:
    # other pair: a is the weaker member (0.4 < 0.7)
    other_attrs = {"accuracy_a": 0.4, "accuracy_b": 0.7}
    other = [
        _trial(0, 2.0, default="a"),
        _trial(1, 3.0, temperature=8.0, alpha=0.9),  # +1.0, weaker student
        _trial(2, 6.0, temperature=4.0, alpha=0.2),  # +4.0, weaker student
        _trial(3, 2.5, temperature=20.0, alpha=0.3),  # +0.5 but T outside the own space
        _trial(4, 4.0, temperature=2.0, transfer_set="public+self", aggregation="sum"),  # +2.0
    ]
    # own pair: b is the weaker member, and the own study already ran T=8, alpha=0.9 as b
    own_attrs = {"accuracy_a": 0.8, "accuracy_b": 0.5}
    own = [_trial(0, 1.0, default="a"), _trial(5, 0.0, temperature=8.0, alpha=0.9, position="b")]
    space = parse_space({"temperature": [0.25, 16.0]})
    got = choose(own_attrs, own, space, [("fed/2-3", other_attrs, other)])
    assert [p for p, _ in got] == [
        {"temperature": 4.0, "alpha": 0.2, "divergence": "kl", "transfer_set": "public",
         "position": "b"},
        {"temperature": 2.0, "alpha": 0.5, "divergence": "kl", "transfer_set": "public+self",
         "aggregation": "sum", "position": "b"},
    ]  # fmt: skip
    assert [a[WARM_ATTR] for _, a in got] == ["fed/2-3#2", "fed/2-3#4"]
    # a space without public+self drops that configuration; k bounds the count
    narrow = parse_space({"temperature": [0.25, 16.0], "transfer_set": ["public", "local"]})
    assert [a[WARM_ATTR] for _, a in choose(own_attrs, own, narrow, [("o", other_attrs, other)])] \
        == ["o#2"]  # fmt: skip
    assert len(choose(own_attrs, [], space, [("o", other_attrs, other)], k=1)) == 1
    assert len(choose(own_attrs, [], SPACE, [("o", other_attrs, other)])) == 3  # T=20 fits here


def test_a_run_warm_starts_each_pair_once_from_the_others(opts, tmp_path) -> None:
    """A cold run of one pair, then three pairs with --warm-start on and two worker processes:
    each new study takes, once, configurations that beat their default in another study."""
    url = f"sqlite:///{tmp_path / 'warm.db'}"
    # The cold run only provides single trials to start from (the warm start reads no
    # confirmation), so it skips its confirmation. Both runs use --strategy fixed: the warm start
    # reads single trials against their default, and a race's repeated rounds of one
    # configuration would make "no configuration run twice" below untrue by design.
    tune(opts(storage=url, pairs="0-1", trials=10, sampler="random", confirm=0, strategy="fixed"),
         say=lambda _m: None)  # fmt: skip
    pairs = ("0-2", "1-3", "2-3")
    # --confirm 0 here too: the confirmation reads nothing the warm start wrote (and would run
    # 3 pairs x 4 candidates x 3 seeds more rounds).
    o = opts(storage=url, pairs="0-1," + ",".join(pairs), trials=10, sampler="random",
             workers=2, warm_start=True, strategy="fixed", confirm=0)  # fmt: skip
    tune(o, say=lambda _m: None)
    source = {t.number: t for t in trials_of(url, "tiny/0-1")}
    beat = {t.number for _, t in improvements(list(source.values()))}
    assert beat, "the cold pair found nothing better than its default: no test"
    assert not any(WARM_ATTR in t.user_attrs for t in source.values())  # past its trigger
    storage = optuna.storages.RDBStorage(url)
    assert all(
        s.user_attrs["run"].get("warm_start")
        for s in storage.get_all_studies()
        if s.user_attrs.get("mode") == "pair"
    )  # recorded for joining workers (on the pair studies: their confirmation has no warm start)
    took = 0
    for pair in pairs:
        trials = trials_of(url, f"tiny/{pair}")
        warm = [t for t in trials if WARM_ATTR in t.user_attrs]
        assert len(warm) <= WARM_TRIALS
        assert all(t.number > warm_at(SPACE) for t in warm)  # enqueued by trial warm_at's claim
        froms = [t.user_attrs[WARM_ATTR] for t in warm]
        assert len(set(froms)) == len(froms)  # never twice
        configs = [tuple(sorted(t.params.items())) for t in trials if t.state != TrialState.FAIL]
        assert len(set(configs)) == len(configs)  # no configuration run twice
        for t in warm:
            name, number = t.user_attrs[WARM_ATTR].rsplit("#", 1)
            assert name != f"tiny/{pair}"
            origin_trials = trials_of(url, name)
            origin = next(x for x in origin_trials if x.number == int(number))
            assert {k: v for k, v in t.params.items() if k != "position"} == {
                k: v for k, v in origin.params.items() if k != "position"
            }
            assert origin.number in {x.number for _, x in improvements(origin_trials)}
        took += len(warm)
    assert took >= len(pairs)  # 0-1's improvements were there for every new pair
