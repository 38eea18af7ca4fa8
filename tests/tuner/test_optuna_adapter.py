"""Optuna's private parts that dkd-tune relies on (tuner.store.adapter): each still holds in the
installed Optuna, no module outside the adapter touches one, and the check names the part when an
Optuna release changes it (shown on simulated changes)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from tuner.store import adapter

TUNER = Path(__file__).resolve().parents[2] / "tuner"
#: What counts as a private use of Optuna outside the adapter.
PRIVATE = re.compile(r"\._storage\b|\._study_id\b|\._trial_id\b|optuna\.study\._|_get_trials|"
                     r"[\"']fixed_params[\"']")  # fmt: skip


def test_every_private_part_holds_in_the_installed_optuna() -> None:
    assert adapter.check() == []


def test_the_check_names_a_moved_frozen_study(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapter, "FrozenStudy", type("FrozenStudy", (), {}))
    problems = adapter.check()
    assert len(problems) == 1 and "optuna.study._frozen.FrozenStudy" in problems[0]


def test_the_check_names_samplers_that_bypass_the_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release whose samplers read a plain copy of the study (not through the study object's
    ``_get_trials``) would show the race's sampler every seed again: reported."""
    original = optuna.samplers.TPESampler.sample_independent

    def bypass(self, study, trial, name, distribution):  # type: ignore[no-untyped-def]
        plain = optuna.Study.__new__(optuna.Study)
        plain.__dict__ = dict(study.__dict__)
        return original(self, plain, trial, name, distribution)

    monkeypatch.setattr(optuna.samplers.TPESampler, "sample_independent", bypass)
    problems = adapter.check()
    assert len(problems) == 1 and "samplers list trials through it" in problems[0]


def test_no_module_outside_the_adapter_uses_optunas_private_parts() -> None:
    uses = {
        str(p.relative_to(TUNER)): len(PRIVATE.findall(p.read_text()))
        for p in TUNER.rglob("*.py")
        if p.name != "adapter.py"
    }
    assert {k: v for k, v in uses.items() if v} == {}
