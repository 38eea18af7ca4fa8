"""The typed records in user attrs (tuner.store.records): each one read back equals the one
written, through a real SQLite storage; the stored JSON keeps the form earlier versions wrote and
read; and attrs stored in an older form (before a key existed) read by the documented rule."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest

import tuner
from tuner.store.records import (
    LEGACY_MIN_GAIN,
    PLAN_ATTR,
    RUN_ATTR,
    ConfirmationPlan,
    DefaultMark,
    RunRecord,
    budget_of,
    is_default,
)

FULL_RUN = RunRecord(budget=200, sampler="gp", pruner="quartile", seed=3, retries=2, confirm=8,
                     max_forgetting=1.5, warm_start=True, min_gain=0.5)  # fmt: skip
PLANS = (
    ConfirmationPlan((7, 0), (2_000_000_011, 2_000_000_012, 2_000_000_013), (3,)),
    ConfirmationPlan((12, 0), tuple(range(2_000_000_011, 2_000_000_019)), (3, 8)),
)


@pytest.fixture
def storage(tmp_path) -> optuna.storages.RDBStorage:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'records.db'}")
    yield storage
    storage.engine.dispose()


def _stored(storage: optuna.storages.RDBStorage, attrs: dict) -> dict:
    """``attrs`` written as a study's user attrs and read back from the database."""
    study = optuna.create_study(storage=storage)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    (frozen,) = [s for s in storage.get_all_studies() if s.study_name == study.study_name]
    return frozen.user_attrs


@pytest.mark.parametrize(
    "record",
    [FULL_RUN, RunRecord(None, "tpe", "none", 0, 0), *PLANS, DefaultMark("a"), DefaultMark("avg")],
    ids=lambda r: type(r).__name__,
)
def test_each_record_reads_back_as_written(storage, record) -> None:
    assert type(record).from_attrs(_stored(storage, record.to_attrs())) == record


def test_the_stored_json_keeps_its_form() -> None:
    assert FULL_RUN.to_attrs() == {RUN_ATTR: {
        "budget": 200, "sampler": "gp", "pruner": "quartile", "seed": 3, "retries": 2,
        "confirm": 8, "max_forgetting": 1.5, "warm_start": True, "min_gain": 0.5,
    }}  # fmt: skip
    # The keys added later are left out at their "off" value, as the writers always did.
    assert RunRecord(4, "random", "none", 0, 2).to_attrs() == {RUN_ATTR: {
        "budget": 4, "sampler": "random", "pruner": "none", "seed": 0, "retries": 2,
    }}  # fmt: skip
    fixed, race = PLANS
    assert fixed.to_attrs() == {PLAN_ATTR: {"candidates": [7, 0], "seeds": list(fixed.seeds)}}
    assert race.to_attrs()[PLAN_ATTR]["looks"] == [3, 8]
    assert DefaultMark("b").to_attrs() == {"default": "b"}


def test_attrs_of_an_older_form_read_by_the_documented_rule(storage) -> None:
    # A run recorded before --confirm, --max-forgetting, --warm-start and --min-gain existed,
    # and a plan written before the race's looks: as the first versions stored them.
    attrs = _stored(storage, {
        "run": {"budget": 20, "sampler": "tpe", "pruner": "median", "seed": 0, "retries": 2},
        "confirmation": {"candidates": [4, 1, 0], "seeds": [2_000_000_011, 2_000_000_012]},
    })  # fmt: skip
    run = RunRecord.from_attrs(attrs)
    assert run == RunRecord(20, "tpe", "median", 0, 2, confirm=0, max_forgetting=None,
                            warm_start=False, min_gain=None)  # fmt: skip
    assert run.answer_min_gain == LEGACY_MIN_GAIN == 0.0  # its answer rests on the test alone
    assert budget_of(attrs) == 20
    plan = ConfirmationPlan.from_attrs(attrs)
    assert plan.candidates == (4, 1, 0) and plan.seeds == (2_000_000_011, 2_000_000_012)
    assert plan.looks == (2,) and not plan.sequential  # one look at every seed
    # Nothing recorded: no record (a study whose creator died before its run was recorded).
    assert RunRecord.from_attrs({}) is None and ConfirmationPlan.from_attrs({}) is None
    assert budget_of({}) is None


def test_a_default_trials_mark_is_read_from_its_trial(storage) -> None:
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 0.5}, user_attrs={**DefaultMark("a").to_attrs(), "attempt": 1})
    study.enqueue_trial({"x": 0.1}, user_attrs={"attempt": 1})
    for _ in range(2):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, 1.0)
    marked, plain = study.get_trials()
    assert DefaultMark.from_attrs(marked.user_attrs) == DefaultMark("a")
    assert is_default(marked.user_attrs) and not is_default(plain.user_attrs)
    assert DefaultMark.from_attrs(plain.user_attrs) is None


def test_no_module_but_the_records_reads_them_by_key() -> None:
    """The one owner: no module of tuner/ but tuner.store.records reads the attrs ``run``,
    ``confirmation`` or ``default`` by key (``x["run"]``, ``x.get("run")``, ``"run" in x``)."""
    keys = {RUN_ATTR, PLAN_ATTR, "default"}

    def reads(tree: ast.AST) -> list[int]:
        found = []
        for n in ast.walk(tree):
            if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load):
                key = n.slice
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.args \
                    and n.func.attr == "get":  # fmt: skip
                key = n.args[0]
            elif isinstance(n, ast.Compare) and isinstance(n.ops[0], ast.In | ast.NotIn):
                key = n.left
            else:
                continue
            if isinstance(key, ast.Constant) and key.value in keys:
                found.append(n.lineno)
        return found

    root = Path(tuner.__file__).parent
    found = {
        str(p.relative_to(root)): lines
        for p in root.rglob("*.py")
        if p.name != "records.py" and (lines := reads(ast.parse(p.read_text())))
    }
    assert found == {}
    assert reads(ast.parse('a = s.user_attrs.get("run", {})')) == [1]
