"""Each user-facing flag of ``dkd-tune`` as a user types it: through the CLI's entry point, with
every other default on (TPE, the quartile pruner, confirmation with 3 seeds, one worker), and
the stored result checked — the pair study topped up, its confirmation complete, the
recommendation readable, and what the flag changes found in the database. (The default
confirmation once refused ``--batch-trials`` and ``--precision`` after writing its studies.)"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.cli import main
from tuner.read.results import pair_rows
from tuner.search.race import SEED_ATTR, round_seed
from tuner.store.records import PLAN_ATTR
from tuner.store.storage import get_storage

TRIALS = 4
PAIR = "tiny/0-1"


def console_script() -> list[str]:
    """``dkd-tune`` as installed next to this interpreter (``python -m tuner`` without one)."""
    script = Path(sys.executable).with_name("dkd-tune")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tuner"]


def _trials(storage, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def _attrs(storage, name: str) -> dict:
    return optuna.load_study(study_name=name, storage=storage).user_attrs


Check = Callable[[object, str], None]


def _every(key: str, value: object) -> Check:
    """Every finished pair and confirmation trial records ``key`` = ``value``."""

    def check(storage, _out: str) -> None:
        for name in (PAIR, f"{PAIR}/confirm"):
            done = [t for t in _trials(storage, name) if t.state.is_finished()
                    and t.state != TrialState.FAIL]  # fmt: skip
            assert done and all(t.user_attrs.get(key) == value for t in done), (name, key)

    return check


def _run_attr(key: str, value: object) -> Check:
    def check(storage, _out: str) -> None:
        assert _attrs(storage, PAIR)["run"].get(key) == value

    return check


def _settings(**want: object) -> Check:
    def check(storage, _out: str) -> None:
        got = _attrs(storage, PAIR)["worker_settings"]
        assert {k: got[k] for k in want} == want

    return check


def _batched(storage, _out: str) -> None:
    # The two default trials were claimed together, and so were confirmation runs.
    for name in (PAIR, f"{PAIR}/confirm"):
        assert any(t.user_attrs.get("batch_trials") == 2 for t in _trials(storage, name)), name
    _settings(batch_trials=2)(storage, _out)


def _constrained(storage, _out: str) -> None:
    _run_attr("max_forgetting", 5.0)(storage, _out)
    done = [t for t in _trials(storage, PAIR) if t.state == TrialState.COMPLETE]
    for t in done:
        assert t.constraints == {"forgetting": pytest.approx(t.user_attrs["forgetting"] - 5.0)}


def _seeded(storage, _out: str) -> None:
    # --seed moves the sampler; the race's rounds keep their shared seeds (the pairing), so the
    # seed-0 rounds of the configurations differ from a --seed 0 run's only by configuration.
    trials = [t for t in _trials(storage, PAIR) if t.state == TrialState.COMPLETE]
    assert trials and all(t.user_attrs["seed"] == round_seed(t.user_attrs[SEED_ATTR])
                          for t in trials)  # fmt: skip
    assert _attrs(storage, PAIR)["run"]["seed"] == 7


def _two_seeds(storage, _out: str) -> None:
    assert len(_attrs(storage, PAIR)[PLAN_ATTR]["seeds"]) == 2


def _logged(_storage, out: str) -> None:
    assert f"{PAIR} #" in out and f"{PAIR}/confirm #" in out


def _two_workers(storage, out: str) -> None:
    assert "2 worker(s)" in out


def _fixed(storage, _out: str) -> None:
    # The earlier pipeline: single-seed trials seeded per trial number, no race attrs, its 3 best
    # and the default confirmed on --confirm's default of 3 seeds.
    attrs = _attrs(storage, PAIR)
    assert attrs["strategy"] == "fixed" and "stopped" not in attrs
    assert len(attrs[PLAN_ATTR]["seeds"]) == 3
    assert all(SEED_ATTR not in t.user_attrs for t in _trials(storage, PAIR))


def _min_gain(storage, _out: str) -> None:
    _run_attr("min_gain", 2.0)(storage, _out)
    row = next(r for r in pair_rows(storage) if r["study"] == PAIR)
    assert row["min_gain"] == 2.0
    if not row["recommended_is_default"]:
        assert row["confirmed_difference"] >= 2.0


#: flag -> (arguments, what it must have stored)
FLAGS: dict[str, tuple[list[str], Check]] = {
    "batch-trials": (["--batch-trials", "2"], _batched),
    "precision": (["--precision", "bf16"], _every("precision", "bf16")),
    "max-forgetting": (["--max-forgetting", "5"], _constrained),
    "warm-start": (["--warm-start", "on"], _run_attr("warm_start", True)),
    "pruner": (["--pruner", "median"], _run_attr("pruner", "median")),
    "sampler": (["--sampler", "random"], _run_attr("sampler", "random")),
    "seed": (["--seed", "7"], _seeded),
    "retries": (["--retries", "0"], _run_attr("retries", 0)),
    "confirm": (["--confirm", "2"], _two_seeds),
    "progress": (["--progress", "log"], _logged),
    "workers": (["--workers", "2"], _two_workers),
    "strategy": (["--strategy", "fixed"], _fixed),
    "min-gain": (["--min-gain", "2"], _min_gain),
    "heartbeat": (
        ["--heartbeat-interval", "2", "--heartbeat-grace", "6"],
        _settings(heartbeat_interval=2.0, heartbeat_grace=6.0),
    ),
}


#: The flag whose run goes through the installed console script, as a user's shell starts it
#: (its worker processes too); the others call the same entry point, ``tuner.cli.main``, in this
#: process, meanwhile: a fresh interpreter costs seconds of imports (torch, optuna, and the
#: torch._dynamo that torch.optim loads), which twelve of them spent on the same start-up.
SCRIPTED = "workers"


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every flag's run, each on its own SQLite file (their tests only read them): flag -> (the
    finished run as a CompletedProcess, its storage URL)."""
    root = tmp_path_factory.mktemp("flags")

    def argv(flag: str) -> list[str]:
        return ["--config", tiny["config"], "--bundles", tiny["bundles"],
                "--storage", f"sqlite:///{root / flag}.db", "--pairs", "0-1",
                "--trials", str(TRIALS), *FLAGS[flag][0]]  # fmt: skip

    scripted = subprocess.Popen([*console_script(), *argv(SCRIPTED)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    out: dict = {}
    try:
        for flag in FLAGS:
            if flag == SCRIPTED:
                continue
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = main(argv(flag))
            done = subprocess.CompletedProcess(argv(flag), code, stdout.getvalue(),
                                               stderr.getvalue())  # fmt: skip
            out[flag] = (done, argv(flag)[5])
        stdout, stderr = scripted.communicate(timeout=300)
    finally:
        scripted.kill()
    out[SCRIPTED] = (subprocess.CompletedProcess(scripted.args, scripted.returncode, stdout,
                                                 stderr), argv(SCRIPTED)[5])  # fmt: skip
    return out


@pytest.mark.parametrize("flag", list(FLAGS))
def test_flag_with_every_default(flag: str, runs: dict) -> None:
    check = FLAGS[flag][1]
    out, url = runs[flag]
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "error" not in out.stderr, out.stderr
    storage = get_storage(url)
    pair = _trials(storage, PAIR)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in pair) == TRIALS
    # The default confirmation ran to the end and the pair has its answer.
    plan = _attrs(storage, PAIR)[PLAN_ATTR]
    runs = [t for t in _trials(storage, f"{PAIR}/confirm") if t.state == TrialState.COMPLETE]
    (row,) = pair_rows(storage)
    # A race's confirmation stops at its first look when that decides (tuner.read.decision).
    assert row["recommended_gain_mean"] is not None
    assert row["seeds"] in plan.get("looks", [len(plan["seeds"])])
    assert len(runs) == len(plan["candidates"]) * row["seeds"]
    check(storage, out.stdout)
