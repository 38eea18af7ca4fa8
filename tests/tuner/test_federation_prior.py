"""The model over all pairs measured for ``--strategy federation`` (bench/federation_prior.py,
not shipped: bench/RESULTS.md, "The federation's model"): what it reads from the settled pairs'
rounds (checked against a float64 computation by hand), and that its guesses follow the pair
descriptor — the teacher−student accuracy gap — rather than copying a sibling's best. The bench's
figures rest on these."""

from __future__ import annotations

import math

from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from tuner_helpers import bench_module

from tuner.search.federation import FEDERATION_ATTR
from tuner.search.race import SEED_ATTR
from tuner.search.space import parse_space

prior = bench_module("federation_prior")  # the model the bench's figures come from
SPREAD, Encoder, guesses, observations = (prior.SPREAD, prior.Encoder, prior.guesses,
                                          prior.observations)  # fmt: skip

DIST = {
    "temperature": FloatDistribution(0.05, 100.0, log=True),
    "alpha": FloatDistribution(0.0, 1.0),
    "divergence": CategoricalDistribution(["kl"]),
    "transfer_set": CategoricalDistribution(["public"]),
    "position": CategoricalDistribution(["a", "b"]),
}
# T and α searched, kl on the public set: the bench's space; both positions unless said.
SPACE = parse_space({"temperature": [0.25, 16.0], "divergence": ["kl"], "transfer_set":
                     ["public"]}, "test")  # fmt: skip


def _trials(rounds: list[tuple[float, float, str, list[float]]]) -> list:
    """Finished race rounds: (T, α, position, gain per seed index); T = 1, α = 0.5 is the
    default of its position."""
    out = []
    for t, alpha, position, gains in rounds:
        default = {"default": position} if (t, alpha) == (1.0, 0.5) else {}
        for seed, gain in enumerate(gains):
            params = {"temperature": t, "alpha": alpha, "divergence": "kl",
                      "transfer_set": "public", "position": position}  # fmt: skip
            trial = create_trial(params=params, distributions=DIST, value=gain,
                                 state=TrialState.COMPLETE,
                                 user_attrs={SEED_ATTR: seed, **default})  # fmt: skip
            trial.number = len(out)
            out.append(trial)
    return out


def _attrs(student: float, teacher: float, position: str = "a") -> dict:
    """Study attrs whose member at ``position`` (the student) has accuracy ``student``."""
    other = "b" if position == "a" else "a"
    return {f"accuracy_{position}": student, f"accuracy_{other}": teacher}


def test_leads_and_their_noise_are_paired_differences_over_shared_seeds() -> None:
    trials = _trials([
        (1.0, 0.5, "a", [1.0, 2.0, 1.5]),  # the default, 3 seeds
        (4.0, 0.5, "a", [3.0, 3.5]),  # 2 seeds: paired with the default's first 2
        (2.0, 0.8, "a", [2.0, 2.0, 3.5]),
    ])  # fmt: skip
    inputs, y, noise, used = observations([("fed/0-1", _attrs(0.4, 0.7), trials)], Encoder(SPACE))
    # By hand, float64: differences per seed against the default on the same seed.
    d4 = [3.0 - 1.0, 3.5 - 2.0]
    d2 = [2.0 - 1.0, 2.0 - 2.0, 3.5 - 1.5]
    m4, m2 = sum(d4) / 2, sum(d2) / 3
    var = (sum((v - m4) ** 2 for v in d4) + sum((v - m2) ** 2 for v in d2)) / (1 + 2)
    assert used == 1 and list(y) == [0.0, m4, m2]
    assert math.isclose(noise[1], var / 2, rel_tol=1e-12)
    assert math.isclose(noise[2], var / 3, rel_tol=1e-12)
    assert noise[0] < 1e-5  # a default's lead is 0 by definition
    # Inputs: log T and α scaled to the space's ranges, then the gap (teacher − student).
    span = math.log(16.0) - math.log(0.25)
    assert math.isclose(inputs[1][0], (math.log(4.0) - math.log(0.25)) / span, rel_tol=1e-12)
    assert math.isclose(inputs[2][1], 0.8, rel_tol=1e-12)
    assert all(math.isclose(row[2], 0.3, rel_tol=1e-12) for row in inputs)


def test_a_large_federation_keeps_the_defaults_and_the_leads_on_most_seeds(monkeypatch) -> None:
    # A fit is cubic in its observations: past the cap, the defaults (lead 0 by definition) and
    # the leads measured on the most seeds stay (tuner.search.prior.MAX_OBSERVATIONS).
    monkeypatch.setattr(prior, "MAX_OBSERVATIONS", 3)
    trials = _trials([(1.0, 0.5, "a", [1.0, 2.0, 1.5]), (4.0, 0.5, "a", [3.0]),
                      (2.0, 0.8, "a", [2.0, 2.0, 3.5]), (8.0, 0.8, "a", [2.5, 2.5])])  # fmt: skip
    _, y, noise, _ = observations([("fed/0-1", _attrs(0.4, 0.7), trials)], Encoder(SPACE))
    assert list(y) == [0.0, (1.0 + 0.0 + 2.0) / 3, (1.5 + 0.5) / 2]  # T = 4's single seed went
    assert noise[1] < noise[2]  # three seeds average more noise away than two


def _landscape(peak_log2_t: float) -> list:
    """A settled race whose lead over the default peaks at log2 T = ``peak_log2_t`` (α = 0.8)
    and falls quadratically around it, on 2 seeds (the second 0.2 pp above the first)."""
    rounds = [(1.0, 0.5, "a", [0.0, 0.0])]
    for log2_t in (-2, -1, 0, 1, 2, 3, 4):
        lead = 4.0 - (log2_t - peak_log2_t) ** 2
        rounds.append((2.0**log2_t, 0.8, "a", [lead, lead + 0.2]))
    return _trials(rounds)


# Siblings whose best temperature grows with the teacher's lead over the student: log2 T = 10·gap.
SIBLINGS = [(f"fed/s{k}", _attrs(0.7 - g, 0.7), _landscape(10 * g))
            for k, g in enumerate((-0.15, 0.0, 0.1, 0.3))]  # fmt: skip


def test_the_first_guess_follows_the_pairs_gap_not_a_siblings_best() -> None:
    space = parse_space({"temperature": [0.25, 16.0], "divergence": ["kl"], "transfer_set":
                         ["public"], "position": ["a"]}, "test")  # fmt: skip
    for g in (0.2, -0.05):  # between the siblings' gaps: its best lies where none of theirs does
        [first], used = guesses(_attrs(0.7 - g, 0.7), space, SIBLINGS, 1)
        assert used == 4
        assert abs(math.log2(first.params["temperature"]) - 10 * g) < 0.6, first
        assert first.params["alpha"] > 0.6  # the leads lie at α = 0.8, the default at 0.5
        assert first.lead > 2.0


def test_a_sibling_informs_by_role_through_the_gap() -> None:
    # This pair's weaker member is b: the guess puts the student there, where the gap is the
    # siblings' (the teacher 0.15 ahead: log2 T = 1.5), not at a (the student ahead).
    [first], _ = guesses({"accuracy_a": 0.85, "accuracy_b": 0.7}, SPACE, SIBLINGS, 1)
    assert first.params["position"] == "b"
    assert abs(math.log2(first.params["temperature"]) - 1.5) < 0.6


def test_guesses_are_spread_deterministic_and_need_rounds() -> None:
    own = _attrs(0.6, 0.7)
    found, _ = guesses(own, SPACE, SIBLINGS, 3)
    again, _ = guesses(own, SPACE, SIBLINGS, 3)
    assert [g.params for g in found] == [g.params for g in again]  # every worker the same
    assert len(found) == 3 and [g.lead for g in found] == sorted((g.lead for g in found),
                                                                  reverse=True)  # fmt: skip
    encoder = Encoder(SPACE)
    for i, p in enumerate(found):
        for q in found[:i]:
            if p.params["position"] == q.params["position"]:
                a, b = encoder.row(p.params, 0.0)[:2], encoder.row(q.params, 0.0)[:2]
                assert math.dist(a, b) >= SPREAD
    # Nothing to learn from: no sibling, or siblings whose only rounds are their defaults.
    assert guesses(own, SPACE, [], 3) == ([], 0)
    only_defaults = [("fed/x", _attrs(0.5, 0.7), _trials([(1.0, 0.5, "a", [1.0, 2.0])]))]
    assert guesses(own, SPACE, only_defaults, 3)[0] == []


def test_proposals_are_the_guesses_each_a_first_round_not_tried_before() -> None:
    own = {"accuracy_a": 0.85, "accuracy_b": 0.7}
    got = prior.proposals(own, [], SPACE, SIBLINGS, 3)
    assert [p for p, _ in got] == [g.params for g in guesses(own, SPACE, SIBLINGS, 3)[0]]
    assert [a[FEDERATION_ATTR] for _, a in got] == [
        f"the model of 4 pairs, guess {k}" for k in (1, 2, 3)]  # fmt: skip
    assert all(a[SEED_ATTR] == 0 for _, a in got)
    queued = create_trial(params=got[0][0], distributions=DIST, state=TrialState.WAITING)
    assert got[0][0] not in [p for p, _ in prior.proposals(own, [queued], SPACE, SIBLINGS, 3)]
