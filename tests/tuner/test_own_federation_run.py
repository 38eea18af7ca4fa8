"""The user's own federation through the tuner: a pair study run by two worker processes, a
changed checkpoint refused by the existing study, the shipped configs found from any folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from optuna.trial import TrialState
from tuner_helpers import db_digest, finished, trials_of

from objectives import load_config
from tuner import TuneOptions, tune
from tuner.cli import main
from tuner.options import DEFAULT_CONFIG


def test_pair_run_with_two_workers_then_a_changed_checkpoint_is_refused(
    own_federation, tmp_path, capsys
):
    url = f"sqlite:///{tmp_path / 'own.db'}"
    bundles = tmp_path / "bundles"
    opts = TuneOptions(confirm=0,  # about the user's checkpoints; confirmation: elsewhere
        config=str(own_federation["config"]), bundles=str(bundles), storage=url, pairs="0-1",
        trials=4, workers=2, pruner="none", progress="quiet",
    )  # fmt: skip
    summary = tune(opts, say=lambda _m: None)
    config = load_config(own_federation["config"])
    trials = trials_of(url, "own-test/0-1")
    assert finished(trials) == 4 and summary.finished == 4
    assert {r.index for r in summary.reports} == {0, 1}  # two worker processes
    # (the finished ones: two workers may race for the last trial, and the loser's surplus
    # claim is closed at once, before it names a student)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and all(t.user_attrs["student"] in (0, 1) for t in done)
    # One participant re-trained (here: one bias nudged): a new federation hash, and its pair
    # changed, so refused in one line naming what changed (tuner.kinds.growth).
    copy = tmp_path / "changed"
    shutil.copytree(own_federation["folder"], copy, ignore=shutil.ignore_patterns("data"))
    text = (copy / "own-federation.toml").read_text()
    (copy / "own-federation.toml").write_text(
        text.replace('root = "data"', f'root = "{own_federation["folder"] / "data"}"')
    )
    state = torch.load(copy / "ckpt" / "participant-0.pt", weights_only=True)
    state["classifier.bias"] += 0.01
    torch.save(state, copy / "ckpt" / "participant-0.pt")
    changed = load_config(copy / "own-federation.toml")
    assert changed.federation_hash != config.federation_hash
    before = db_digest(url)
    argv = ["--config", str(copy / "own-federation.toml"), "--storage", url, "--bundles",
            str(bundles), "--pairs", "0-1", "--trials", "5", "--progress", "quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "(study own-test/0-1), and this config changes its participant 0's checkpoint" in err
    assert err.count("\n") == 1
    assert db_digest(url) == before
    assert sorted(p.name for p in bundles.iterdir() if not p.name.startswith(".")) == [
        f"own-test-{config.federation_hash}"
    ]


def test_shipped_configs_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(DEFAULT_CONFIG).is_absolute() and Path(DEFAULT_CONFIG).is_file()
    assert TuneOptions().config == DEFAULT_CONFIG
    assert load_config(DEFAULT_CONFIG).name == "fashion-mnist-n10"
    assert load_config("fashion-mnist-n3").federation.participants == 3
    assert load_config("studies/fashion-mnist-n3.toml").name == "fashion-mnist-n3"  # old spelling
    (tmp_path / "fashion-mnist-n3.toml").write_text('name = "mine"\n')  # a file here wins
    assert load_config("fashion-mnist-n3.toml").name == "mine"


def test_prepare_from_another_folder_with_a_relative_config(
    own_federation, tmp_path, monkeypatch, capsys
):
    """--config is relative to the working directory, paths inside it to the config file."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    assert (
        main(["prepare", "--config", os.path.relpath(own_federation["config"]), "--bundles", "b"])
        == 0
    )
    lines = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("participant")
    ]
    assert lines[0].startswith("participant 0 (1 of 3): TinyCNN(channels=1, classes=10) from its")
    assert lines[-1].startswith("participant 2: TinyCNN(channels=1, classes=10), ")
    assert "before KD" in lines[-1] and (work / "b").is_dir()
