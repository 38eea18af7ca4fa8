"""The strategy contract (tuner.strategies.base), tested once for every strategy, as the kinds'
contract is: defaults that the options take, every method on a study in any state, and the rule
that no module outside tuner/strategies branches on a strategy's name."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from tuner.options import SAMPLERS, TuneOptions
from tuner.search.space import parse_space
from tuner.strategies import (
    DEFAULT,
    STRATEGIES,
    SUMMARY_KEYS,
    UNNAMED,
    Claim,
    Round,
    Strategy,
    strategy,
    strategy_of,
)

TUNER = Path(__file__).resolve().parents[2] / "tuner"
DIST = {
    "temperature": FloatDistribution(0.05, 100.0, log=True),
    "alpha": FloatDistribution(0.0, 1.0),
    "position": CategoricalDistribution(["a", "b"]),
}
EVERY = pytest.mark.parametrize("s", list(STRATEGIES.values()), ids=list(STRATEGIES))


def _trial(number: int, params: dict, value: float | None, **attrs) -> FrozenTrial:
    state = TrialState.COMPLETE if value is not None else TrialState.WAITING
    t = create_trial(params=params, distributions=DIST, value=value, user_attrs=attrs, state=state)
    t.number = number
    return t


def _study() -> list[FrozenTrial]:
    """Two defaults, a tuned configuration ahead of its default on two seeds, one behind."""
    d_a = {"temperature": 1.0, "alpha": 0.5, "position": "a"}
    d_b = {**d_a, "position": "b"}
    good = {"temperature": 4.0, "alpha": 0.9, "position": "a"}
    bad = {"temperature": 0.2, "alpha": 0.1, "position": "b"}
    return [
        _trial(0, d_a, 5.0, default="a", race_seed=0),
        _trial(1, d_b, 3.0, default="b", race_seed=0),
        _trial(2, good, 8.0, race_seed=0),
        _trial(3, good, 7.5, race_seed=1),
        _trial(4, d_a, 5.2, race_seed=1),
        _trial(5, bad, 1.0, race_seed=0),
    ]


def test_the_table_names_each_strategy_once_and_the_defaults_resolve() -> None:
    assert set(STRATEGIES) == {s.name for s in STRATEGIES.values()}
    assert DEFAULT in STRATEGIES and UNNAMED in STRATEGIES
    assert strategy(None) is STRATEGIES[UNNAMED] and strategy_of({}) is STRATEGIES[UNNAMED]
    assert TuneOptions().strategy == DEFAULT
    with pytest.raises(KeyError):
        strategy("sometimes")


@EVERY
def test_a_strategy_owns_its_defaults_and_the_options_take_them(s: Strategy) -> None:
    assert s.trials >= 1 and (s.confirm == 0 or s.confirm >= 2) and s.sampler in SAMPLERS
    assert s.help and s.confirms and s.budget(7)
    opts = TuneOptions(strategy=s.name)
    assert (opts.trials, opts.confirm, opts.sampler) == (s.trials, s.confirm, s.sampler)
    # Client studies are not raced: they take the unnamed strategy's defaults.
    assert TuneOptions(strategy=s.name, mode="neighbourhood").trials == STRATEGIES[UNNAMED].trials
    assert strategy_of({"strategy": s.name}) is s


@EVERY
def test_every_method_answers_for_a_study_with_no_trials(s: Strategy) -> None:
    claim = s.before_claim([], None)
    assert isinstance(claim, Claim) and claim.stopped is None and claim.enqueue == ()
    assert s.candidates([]) == []
    assert s.summary([], None).keys() == set(SUMMARY_KEYS)


@EVERY
def test_what_a_strategy_takes_from_the_federation_is_nothing_without_siblings(s: Strategy) -> None:
    assert s.share_at is None or s.share_at >= 0
    own = {"accuracy_a": 0.5, "accuracy_b": 0.6}
    assert s.shared(own, _study(), parse_space(None, "test"), []) == ()


def test_the_federation_strategy_shares_at_the_claim_its_rule_names() -> None:
    from tuner.search.federation import SHARE_AT

    assert STRATEGIES["federation"].share_at == SHARE_AT  # a literal there: see its comment


@EVERY
@pytest.mark.parametrize("seeds", [2, 3, 8])
def test_the_looks_end_at_every_seed_and_grow(s: Strategy, seeds: int) -> None:
    looks = s.looks(seeds)
    assert looks[-1] == seeds and looks == sorted(set(looks)) and looks[0] >= 2


@EVERY
def test_a_round_has_a_seed_and_attrs_a_retry_can_carry(s: Strategy) -> None:
    first = s.round({}, 4, seed=0)
    assert isinstance(first, Round) and isinstance(first.seed, int)
    json.dumps(first.attrs)  # stored as user attrs
    assert set(first.attrs) <= set(s.round_attrs)
    # A retry carries the round's attrs (tuner.worker.budget): under them it is the same round
    # for a strategy that names its rounds, and a fresh trial seed for one that does not.
    again = s.round(first.attrs, 9, seed=0)
    assert (again.seed == first.seed) == bool(s.round_attrs)


@EVERY
def test_candidates_are_trials_of_the_study_with_a_default_to_compare(s: Strategy) -> None:
    trials = _study()
    chosen = s.candidates(trials)
    assert chosen and all(t in trials for t in chosen)
    assert any("default" in t.user_attrs for t in chosen)
    tuned = [t for t in chosen if "default" not in t.user_attrs]
    assert tuned and tuned[0].params["temperature"] == 4.0  # the best configuration first
    for t in tuned:  # each tuned candidate's same-student default is confirmed with it
        assert any(d.user_attrs.get("default") == t.params["position"] for d in chosen)


@EVERY
def test_the_summary_has_the_row_columns(s: Strategy) -> None:
    summary = s.summary(_study(), 200)
    assert list(summary) == list(SUMMARY_KEYS)
    json.dumps(summary)


@EVERY
@pytest.mark.parametrize("name", SAMPLERS)
def test_a_sampler_for_every_sampler_name(s: Strategy, name: str) -> None:
    space = parse_space(None, "test")
    assert isinstance(s.make_sampler(name, space, 3), optuna.samplers.BaseSampler)


#: Strategy names that are also keys of a study's attrs or a config's sections (``federation``:
#: a pair study's federation name): a lookup by them is no branch on a strategy; a comparison is.
KEYS_TOO = {"federation"}


def _compared_names(tree: ast.AST) -> list[str]:
    """Strategy names a module compares with or looks up by (``== "race"``, ``["fixed"]``,
    ``.get("strategy", "fixed")``)."""
    found = []
    for node in ast.walk(tree):
        consts: list[ast.AST] = []
        keys: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            consts = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript):
            keys = [node.slice]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get":
            keys, consts = node.args[:1], node.args[1:]
        found += [c.value for c in consts
                  if isinstance(c, ast.Constant) and c.value in STRATEGIES]  # fmt: skip
        found += [c.value for c in keys if isinstance(c, ast.Constant)
                  and c.value in STRATEGIES and c.value not in KEYS_TOO]  # fmt: skip
    return found


def test_no_module_outside_the_strategies_branches_on_a_strategy_name(tmp_path: Path) -> None:
    offenders = {
        str(p.relative_to(TUNER)): names
        for p in TUNER.rglob("*.py")
        if "strategies" not in p.parts and (names := _compared_names(ast.parse(p.read_text())))
    }
    assert offenders == {}
    # The check can fail.
    assert _compared_names(ast.parse('if task.strategy == "race": pass')) == ["race"]
    assert _compared_names(ast.parse('x = attrs.get("strategy", "fixed")')) == ["fixed"]
    assert _compared_names(ast.parse('if name == "federation": pass')) == ["federation"]
    assert _compared_names(ast.parse('x = attrs["federation"]')) == []  # the attr, no strategy
