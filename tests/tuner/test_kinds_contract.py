"""The study-kind contract (docs/design.md §5), one suite run against every kind, as optuna's
storage tests run against every backend: set-up exactly once, conflicts refused in one line,
the stored study rebuilds its task, and a trial runs through the one lifecycle to COMPLETE."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
import torch
from neighbourhood_helpers import make_tiny2
from optuna.trial import TrialState

from objectives import load_config, prepare_federation
from tuner.kinds import KINDS, Task, kind_of
from tuner.kinds.cell import cells
from tuner.kinds.client import NeighbourhoodSpace
from tuner.kinds.confirmation import runs
from tuner.kinds.setup import check_existing, enqueue, setup_study
from tuner.search.space import parse_space
from tuner.store.db import count_trials
from tuner.store.storage import get_storage
from tuner.worker.lifecycle import Settings, run_one


@pytest.fixture(scope="module")
def federations(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny one-head federation (pair, confirm) and the tiny two-head one (client, compare)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # milliseconds of work: two threads only slow a busy machine
    tiny2 = make_tiny2(tmp_path_factory.mktemp("contract"))
    out = {}
    for name, paths in (("tiny", tiny), ("tiny2", tiny2)):
        config = load_config(paths["config"])
        out[name] = (config, prepare_federation(config, directory=paths["bundles"]))
    yield out
    torch.set_num_threads(before)


def make_task(kind: str, federations: dict) -> tuple[Task, object]:
    """One task of ``kind`` on its federation, and that federation's bundle."""
    if kind == "pair":
        config, bundle = federations["tiny"]
        return Task("tiny/0-1", kind, (0, 1), config, parse_space(config.search), 4), bundle
    if kind == "confirm":
        config, bundle = federations["tiny"]
        params = {"temperature": 2.0, "alpha": 0.3, "divergence": "js",
                  "transfer_set": "public", "position": "b"}  # fmt: skip
        wanted = tuple(runs(7, params, [11, 12]))
        return Task("tiny/0-1/confirm", kind, (0, 1), config, wanted=wanted), bundle
    config, bundle = federations["tiny2"]
    if kind == "neighbourhood":
        space = NeighbourhoodSpace.from_search(parse_space(config.search), "local")
        return Task("tiny2/client-0", kind, (0, 1, 2), config, space, 3), bundle
    return Task("tiny2/compare", kind, (), config, wanted=cells(1)[:3]), bundle


@pytest.fixture(params=sorted(KINDS))
def case(request: pytest.FixtureRequest, federations: dict, tmp_path) -> dict:
    task, bundle = make_task(request.param, federations)
    url = f"sqlite:///{tmp_path / 'kinds.db'}"
    return {"task": task, "bundle": bundle, "url": url, "storage": get_storage(url)}


def test_the_name_is_the_kinds_and_the_record_holds_what_it_checks(case: dict) -> None:
    task, kind = case["task"], KINDS[case["task"].kind]
    assert kind.study_name(task.config.name, task.target) == task.study
    record = kind.record(task, case["bundle"])
    assert record["mode"] == kind.name and kind_of(record) is kind
    assert kind.conflict(task.study, record, task, case["url"]) is None


def test_setup_enqueues_once_and_a_second_setup_adds_nothing(case: dict) -> None:
    task, storage = case["task"], case["storage"]
    first = setup_study(storage, case["url"], task, case["bundle"])
    waiting = count_trials(storage, [first])[first].waiting
    assert waiting == (len(task.wanted) if KINDS[task.kind].fixed else len(task.space.defaults()))
    again = setup_study(storage, case["url"], task, case["bundle"])
    assert again == first and count_trials(storage, [first])[first].waiting == waiting
    assert enqueue(storage, task) == 0


def test_a_changed_federation_is_refused_in_one_line(case: dict) -> None:
    task, storage = case["task"], case["storage"]
    setup_study(storage, case["url"], task, case["bundle"])
    other = dataclasses.replace(task.config, seed=task.config.seed + 1)  # another hash
    changed = dataclasses.replace(task, config=other)
    with pytest.raises(Exception) as err:
        check_existing(storage, case["url"], [changed])
    message = str(err.value)
    assert "federation hash" in message and "\n" not in message and task.study in message


def test_the_stored_study_rebuilds_the_task(case: dict) -> None:
    task, storage = case["task"], case["storage"]
    study_id = setup_study(storage, case["url"], task, case["bundle"])
    attrs = storage.get_study_user_attrs(study_id)
    rebuilt = KINDS[task.kind].task_from(task.study, attrs, task.budget)
    assert (rebuilt.study, rebuilt.kind, rebuilt.target, rebuilt.budget) == (
        task.study, task.kind, task.target, task.budget,
    )  # fmt: skip
    assert rebuilt.config.federation_hash == task.config.federation_hash
    assert rebuilt.space == task.space


def test_trials_run_through_the_lifecycle_until_no_work_is_left(case: dict) -> None:
    task, storage, kind = case["task"], case["storage"], KINDS[case["task"].kind]
    study_id = setup_study(storage, case["url"], task, case["bundle"])
    study = optuna.load_study(study_name=task.study, storage=storage)
    settings = Settings(device="cpu", seed=0, retries=1)
    states = []
    while kind.work_left(count_trials(storage, [study_id])[study_id], task):
        states.append(run_one(study, task, case["bundle"], settings).state)
    assert states and set(states) == {"complete"}
    # One more claim finds no room: surplus for a budget, an empty queue for a fixed kind.
    extra = run_one(study, task, case["bundle"], settings)
    assert extra.state == ("empty" if kind.fixed else "surplus")
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == len(states) and all(math.isfinite(t.value) for t in done)
    for t in done:  # what every trial records, whatever its kind
        assert {"device", "worker_host", "worker_pid", "attempt"} <= set(t.user_attrs)
    if kind.fixed:  # each queued trial ran exactly once, with its parameters
        want = sorted(tuple(sorted(p.items())) for p, _ in task.wanted)
        got = sorted(
            tuple(sorted((k, t.params[k]) for k, _ in w))
            for t, w in zip(sorted(done, key=lambda t: t.number), want, strict=True)
        )
        assert sorted(got) == want


def test_a_kind_that_leaves_out_part_of_the_contract_cannot_be_made() -> None:
    """The base is an ABC: a kind module missing a method fails when its instance is made (at
    import, in KINDS), not when a worker first calls it."""
    from tuner.kinds.base import StudyKind
    from tuner.kinds.pair import PairKind

    class NoQueue(StudyKind):
        name = "no-queue"
        study_name = PairKind.study_name
        expected = PairKind.expected
        record = PairKind.record
        task_from = PairKind.task_from
        prepare = PairKind.prepare

    with pytest.raises(TypeError, match="queue"):
        NoQueue()
    assert all(isinstance(kind, StudyKind) for kind in KINDS.values())


def test_every_mode_is_the_tuned_kind_of_its_name(federations: dict) -> None:
    """A ``--mode`` is named as the kind it tunes (docs/design.md §5): the options' mode table
    and the kinds agree, and each tuned kind turns a run's config and options into its studies."""
    from objectives import ConfigError
    from tuner.errors import UsageError
    from tuner.kinds import TUNED
    from tuner.options import MODES, TuneOptions
    from tuner.run.start import phases

    assert set(TUNED) == set(MODES)
    for name, mode in MODES.items():
        assert TUNED[name].races == mode.raced, name  # --strategy's defaults apply as it races
        assert mode.targets in TuneOptions.__dataclass_fields__
    assert all(k.confirmed_by in (None, *KINDS) for k in KINDS.values())
    config, _ = federations["tiny"]
    pair = TUNED["pair"]
    assert pair.run_targets(config, TuneOptions(pairs="2-3,0-1")) == [(0, 1), (2, 3)]
    with pytest.raises(UsageError, match="participant 7 does not exist"):
        pair.run_targets(config, TuneOptions(pairs="0-7"))
    assert [[k.name for k in phase] for phase in phases(TuneOptions(confirm=3))] == [
        ["pair"], ["confirm"]
    ]
    assert [[k.name for k in p] for p in phases(TuneOptions(confirm=0))] == [["pair"]]
    client = TUNED["neighbourhood"]
    with pytest.raises(ConfigError, match="needs a two-head model"):
        client.run_space(config, parse_space(config.search))
    config2, _ = federations["tiny2"]
    space = client.run_space(config2, parse_space(config2.search))
    assert space.transfer_set == config2.neighbourhood.transfer_set
    opts = TuneOptions(mode="neighbourhood", clients="2,0")
    assert client.run_targets(config2, opts) == [(k, *config2.neighbours[k]) for k in (0, 2)]
    assert [[k.name for k in p] for p in phases(opts)] == [["neighbourhood"]]
    # Each mode's studies are picked by its own option, refused in one line under another.
    from tuner.options import check_options

    with pytest.raises(UsageError, match="--pairs is for --mode pair; with --mode neighbourhood"):
        check_options(TuneOptions(mode="neighbourhood", pairs="0-1"))
