"""``--batch-trials k`` on real SQLite files: k trials claimed with ask, trained together, told
one by one; budget, pruning, failures and the recorded results as for single trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from tuner_helpers import db_digest, finished, trials_of

from objectives import load_config, prepare_federation, run_trial
from tuner import tune
from tuner.cli import main
from tuner.kinds import Task
from tuner.search.space import parse_space
from tuner.store.storage import get_storage
from tuner.worker.lifecycle import Settings, run_batch
from tuner.worker.pool import pick_slots


def test_slots_go_to_the_studies_with_most_work_left() -> None:
    order = ["p/0-1", "p/0-2", "p/1-2"]
    assert pick_slots({"p/0-1": 5, "p/0-2": 1, "p/1-2": 3}, 4, order) == [
        "p/0-1",
        "p/0-1",
        "p/0-1",  # 5 -> 3 left, equal to p/1-2's 3: the order breaks the tie
        "p/1-2",
    ]
    # Never past a study's budget, and fewer slots than k when little work is left.
    assert pick_slots({"p/0-1": 1, "p/0-2": 0, "p/1-2": 1}, 8, order) == ["p/0-1", "p/1-2"]
    assert pick_slots({}, 3, order) == []


class PruneNumbers(optuna.pruners.BasePruner):
    """Prunes the trials whose numbers it is given, at their first report (a real pruner)."""

    def __init__(self, numbers: set[int]):
        self.numbers = numbers

    def prune(self, study, trial) -> bool:
        return trial.number in self.numbers


class BrokenPruner(optuna.pruners.BasePruner):
    """A pruner with a bug for one trial: the error must fail that trial and reach the caller."""

    def __init__(self, number: int):
        self.number = number

    def prune(self, study, trial) -> bool:
        if trial.number == self.number:
            raise RuntimeError("pruner broke")
        return False


def _setup(opts, tiny, pairs: str, pruner: optuna.pruners.BasePruner):
    """Studies with their default trials done (a one-trial-at-a-time run), then loaded with
    a random sampler and ``pruner`` for batches."""
    o = opts(pairs=pairs, trials=2)
    tune(o, say=lambda _m: None)
    config = load_config(tiny["config"])
    bundle = prepare_federation(config, directory=tiny["bundles"])
    storage = get_storage(o.storage)
    studies = {
        name: optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(seed=3),
            pruner=pruner,
        )
        for name in (f"tiny/{p}" for p in pairs.split(","))
    }
    return o, config, bundle, parse_space(config.search), studies


def _batch(studies, names, pairs, config, space, bundle, budget):
    """One batch of the named studies' trials through the lifecycle, on the CPU."""
    slots = [(studies[n], Task(n, "pair", pairs[n], config, space, budget)) for n in names]
    return run_batch(slots, bundle, Settings(device="cpu", seed=0, retries=2))


def test_a_batch_records_each_trial_as_a_single_trial_would(opts, tiny) -> None:
    o, config, bundle, space, studies = _setup(opts, tiny, "0-1,2-3", optuna.pruners.NopPruner())
    pairs = {"tiny/0-1": (0, 1), "tiny/2-3": (2, 3)}
    names = ("tiny/0-1", "tiny/0-1", "tiny/2-3")
    outcomes = _batch(studies, names, pairs, config, space, bundle, budget=5)
    assert [(n, out.state) for n, out in outcomes] == [(n, "complete") for n in names]
    for name, pair in pairs.items():
        batched = [t for t in trials_of(o.storage, name) if "batch_trials" in t.user_attrs]
        assert len(batched) == (2 if name == "tiny/0-1" else 1)
        for t in batched:
            assert t.state == TrialState.COMPLETE and t.user_attrs["batch_trials"] == 3
            a, b = pair
            student = a if t.params["position"] == "a" else b
            assert (t.user_attrs["student"], t.user_attrs["teacher"]) == (student, a + b - student)
            # The same trial alone, with the recorded parameters and seed, gives the same gain.
            alone = run_trial(
                bundle,
                student,
                [a + b - student],
                temperature=t.params["temperature"],
                alpha=t.params["alpha"],
                divergence=t.params["divergence"],
                transfer_set=t.params["transfer_set"],
                aggregation=t.params.get("aggregation", "avg"),
                seed=t.user_attrs["seed"],
                recipe=config.kd,
            )
            assert t.value == pytest.approx(alone.gain, abs=0.5)
            assert t.user_attrs["steps"] == alone.steps
            assert len(t.intermediate_values) == config.kd.eval_points


def test_claims_past_the_budget_are_given_back(opts, tiny) -> None:
    o, config, bundle, space, studies = _setup(opts, tiny, "0-1", optuna.pruners.NopPruner())
    outcomes = _batch(studies, ["tiny/0-1"] * 4, {"tiny/0-1": (0, 1)}, config, space, bundle, 4)
    assert sorted(out.state for _, out in outcomes) == [
        "complete",
        "complete",
        "surplus",
        "surplus",
    ]
    assert finished(trials_of(o.storage, "tiny/0-1")) == 4


def test_a_pruned_trial_leaves_the_batch_alone(opts, tiny) -> None:
    # Trial numbers 0-1 are the defaults; the batch claims 2, 3 and 4, and 3 is pruned.
    o, config, bundle, space, studies = _setup(opts, tiny, "0-1", PruneNumbers({3}))
    outcomes = _batch(studies, ["tiny/0-1"] * 3, {"tiny/0-1": (0, 1)}, config, space, bundle, 5)
    assert {out.number: out.state for _, out in outcomes} == {
        2: "complete",
        3: "pruned",
        4: "complete",
    }
    states = {t.number: t.state for t in trials_of(o.storage, "tiny/0-1")}
    assert states[3] == TrialState.PRUNED and states[2] == states[4] == TrialState.COMPLETE


def test_a_bug_fails_its_trial_is_retried_and_raises(opts, tiny) -> None:
    o, config, bundle, space, studies = _setup(opts, tiny, "0-1", BrokenPruner(3))
    with pytest.raises(RuntimeError, match="pruner broke"):
        _batch(studies, ["tiny/0-1"] * 3, {"tiny/0-1": (0, 1)}, config, space, bundle, 5)
    trials = {t.number: t for t in trials_of(o.storage, "tiny/0-1")}
    assert (
        trials[3].state == TrialState.FAIL and "pruner broke" in trials[3].user_attrs["fail_reason"]
    )
    assert trials[2].state == trials[4].state == TrialState.COMPLETE  # the others were told
    retry = [t for t in trials.values() if t.user_attrs.get("retry_of") == 3]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].system_attrs["fixed_params"] == trials[3].params


def test_tuning_with_batches_meets_every_budget(opts) -> None:
    o = opts(pairs="0-1,0-2,1-3", trials=5, batch_trials=4, pruner="median", sampler="tpe")
    summary = tune(o, say=lambda _m: None)
    assert summary.finished == 15
    for name in summary.studies:
        trials = trials_of(o.storage, name)
        assert finished(trials) == 5
        defaults = [t for t in trials if "default" in t.user_attrs and t.state.is_finished()]
        assert sorted(t.user_attrs["default"] for t in defaults) == ["a", "b"]
        assert all(t.state == TrialState.COMPLETE for t in defaults)
        assert any(t.user_attrs.get("batch_trials", 1) > 1 for t in trials)


def test_bad_batch_trials_is_refused_in_one_line(opts, capsys) -> None:
    o = opts()
    argv = ["--config", o.config, "--bundles", o.bundles, "--storage", o.storage]
    assert main([*argv, "--batch-trials", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--batch-trials 0 must be a whole number >= 1" in err
    assert db_digest(o.storage) is None  # nothing written
