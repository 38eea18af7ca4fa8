"""A federation that grows (issue 26 item 4, tuner.kinds.growth), on the user's own federation
(real checkpoints, a real partition file, a real SQLite file): participant 2 joins a federation
tuned with participants 0 and 1, which keeps pair 0-1's study and races only the new pairs;
participant 2 leaves again; a changed public set is refused in one line, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
from tuner_helpers import db_digest, finished, trials_of

from objectives import load_config
from tuner import TuneOptions, tune
from tuner.cli import main
from tuner.kinds.growth import GROWN_FROM, LEFT, PAIR_HASH, plan
from tuner.read.results import pair_studies

#: Small budgets: the test is about which studies are kept, not about the race (--trials caps
#: it); --confirm 0: a confirmation study is kept by the same rule, its pair key recorded alike.
TRIALS = 4


def _federation(own: dict, folder: Path, participants: int, public_cut: int = 0) -> Path:
    """A copy of the own federation's config listing its first ``participants``, with a
    partition file of their rows (``public_cut``: drop that many public images)."""
    folder.mkdir()
    source = own["folder"]
    blob = json.loads((source / "partition.json").read_text())
    blob = {"participants": blob["participants"][:participants],
            "public": blob["public"][public_cut:]}  # fmt: skip
    (folder / "partition.json").write_text(json.dumps(blob))
    shutil.copytree(source / "ckpt", folder / "ckpt")
    shutil.copy(source / "models.py", folder / "models.py")
    text = own["builder"].config_text("own-test", participants)
    text = text.replace('root = "data"', f'root = "{source / "data"}"')
    (folder / "own-federation.toml").write_text(text)
    return folder / "own-federation.toml"


def _run(config: Path, url: str, bundles: Path) -> list[str]:
    opts = TuneOptions(config=str(config), bundles=str(bundles), storage=url, pairs="all",
                       trials=TRIALS, confirm=0, progress="quiet")  # fmt: skip
    said: list[str] = []
    tune(opts, say=said.append)
    return said


def _snapshot(url: str, name: str) -> list[tuple]:
    return [(t.number, t.state, t.params, t.value) for t in trials_of(url, name)]


def test_a_participant_joins_then_leaves_and_a_changed_public_set_is_refused(
    own_federation, tmp_path, capsys
):
    url = f"sqlite:///{tmp_path / 'grow.db'}"
    bundles = tmp_path / "bundles"
    two = _federation(own_federation, tmp_path / "two", 2)
    three = own_federation["config"]
    h2, h3 = load_config(two).federation_hash, load_config(three).federation_hash
    assert h2 != h3
    # Pair 0-1 is the same round in both: same participants, rows and public set.
    assert load_config(two).pair_hash(0, 1) == load_config(three).pair_hash(0, 1)

    _run(two, url, bundles)
    before = _snapshot(url, "own-test/0-1")
    assert finished(trials_of(url, "own-test/0-1")) == TRIALS

    # Participant 2 joins: 0-1 is kept as it was (no round rerun), 0-2 and 1-2 are raced.
    said = _run(three, url, bundles)
    assert f"federation own-test grows from hash {h2}: pairs 0-1 kept as tuned" in said
    assert _snapshot(url, "own-test/0-1") == before
    storage = optuna.storages.RDBStorage(url)
    studies = {s.study_name: s.user_attrs for s in pair_studies(storage)}
    assert sorted(studies) == ["own-test/0-1", "own-test/0-2", "own-test/1-2"]
    assert {a["federation_hash"] for a in studies.values()} == {h3}  # one federation
    assert studies["own-test/0-1"][GROWN_FROM] == [h2]
    assert studies["own-test/0-1"]["config"]["federation"] == studies["own-test/0-2"]["config"][
        "federation"
    ]
    for name in ("own-test/0-2", "own-test/1-2"):
        assert finished(trials_of(url, name)) == TRIALS
        assert studies[name][PAIR_HASH] == load_config(three).pair_hash(*studies[name]["pair"])
    assert main(["status", "--storage", url]) == 0
    status = capsys.readouterr().out
    assert status.startswith("0/3 pairs answered") and "federation hashes" not in status, status

    # Participant 2 leaves (removed from the end): 0-1 goes on under the two-participant hash,
    # the studies of 2 stay in the storage, marked, out of the federation's answer.
    said = _run(two, url, bundles)
    assert (f"federation own-test grows from hash {h3}: pairs 0-1 kept as tuned; pairs 0-2, 1-2 "
            "left (their participant is not in the config)") in said  # fmt: skip
    assert _snapshot(url, "own-test/0-1") == before
    studies = {s.study_name: s.user_attrs for s in storage.get_all_studies()}
    assert studies["own-test/0-1"]["federation_hash"] == h2
    assert studies["own-test/0-1"][GROWN_FROM] == [h2, h3]
    assert studies["own-test/0-2"][LEFT] == h2 and studies["own-test/1-2"][LEFT] == h2
    assert [s.study_name for s in pair_studies(storage)] == ["own-test/0-1"]
    assert plan("own-test", load_config(three), storage.get_all_studies(), url).keep  # back: kept

    # The public set changed: every pair's round changes; refused, the file untouched.
    changed = _federation(own_federation, tmp_path / "changed", 3, public_cut=10)
    digest = db_digest(url)
    argv = ["--config", str(changed), "--storage", url, "--bundles", str(bundles),
            "--trials", str(TRIALS), "--progress", "quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds pair 0-1 (study own-test/0-1), and this config changes its public set" in err
    assert err.count("\n") == 1 and "another federation name" in err
    assert db_digest(url) == digest
    storage.engine.dispose()
