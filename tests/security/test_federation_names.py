"""A federation name is one federation (issue 27): a run, a worker, ``confirm`` and ``compare``
refuse a storage holding the name under another federation hash, in one line, before anything is
written; ``status``, ``export`` and ``report`` never pool two hashes stored under one name.

The storages are real SQLite files whose studies carry the attrs a run records (no trial runs);
the commands are the CLI's ``main`` in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from objectives import load_config
from tuner.cli import main

H1, H2 = "1111aaaa1111aaaa", "2222bbbb2222bbbb"

FED = """\
name = "fed"
[data]
dataset = "synthetic"
train_size = 400
test_size = 200
[federation]
participants = 4
public_size = 100
min_size = 20
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "fed.toml"
    path.write_text(FED)
    return path


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of ``dkd-tune ARGV``, which must exit 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_run_of_a_name_stored_under_another_hash_is_refused(
    config: Path, tmp_path: Path, make_storage, pair_attrs, untouched, capsys
) -> None:
    """The issue's case: pair studies fed/0-1 of another hash; a run on other pairs would have
    added studies of its own hash under the same name."""
    url, path = make_storage({"fed/0-1": pair_attrs("fed", H1, (0, 1))})
    check = untouched(path)
    own = load_config(config).federation_hash
    bundles = tmp_path / "bundles"
    argv = ["--config", str(config), "--storage", url, "--pairs", "2-3", "--bundles", str(bundles),
            "--progress", "quiet"]  # fmt: skip
    err = refused(argv, capsys)
    assert "federation fed is already in" in err and H1 in err and own in err
    assert "fed/0-1" in err and "federation name" in err and "--storage" in err
    check()
    assert not bundles.exists()  # refused before the bundle was built


def test_compare_of_a_name_stored_under_another_hash_is_refused(
    config: Path, tmp_path: Path, make_storage, pair_attrs, untouched, capsys
) -> None:
    url, path = make_storage({"fed/0-1": pair_attrs("fed", H1, (0, 1))})
    check = untouched(path)
    argv = ["compare", "--config", str(config), "--set", 'model.name="small-cnn-2head"',
            "--storage", url, "--partitions", "dirichlet:0.5", "--seeds", "1",
            "--bundles", str(tmp_path / "bundles")]  # fmt: skip
    err = refused(argv, capsys)
    assert "federation fed is already in" in err and H1 in err
    check()


@pytest.mark.parametrize(
    "argv",
    [
        ["worker"],
        ["worker", "--federation", H2],
        ["confirm", "--repeats", "2"],
        ["confirm", "--federation", H1],
    ],
)
def test_a_storage_holding_one_name_under_two_hashes_is_joined_by_no_one(
    argv: list[str], make_storage, pair_attrs, untouched, capsys
) -> None:
    """A worker or ``confirm`` would add trials to one of two configs sharing a name: refused,
    even when ``--federation HASH`` picks one."""
    url, path = make_storage({
        "fed/0-1": pair_attrs("fed", H1, (0, 1)),
        "fed/1-2": pair_attrs("fed", H1, (1, 2)),
        "fed/2-3": pair_attrs("fed", H2, (2, 3)),
    })  # fmt: skip
    check = untouched(path)
    err = refused([*argv, "--storage", url], capsys)
    assert "federation fed is stored in" in err and H1 in err and H2 in err
    assert "fed/0-1" in err and "fed/2-3" in err and "another --storage" in err
    check()


@pytest.fixture
def two_hashes(make_storage, pair_attrs) -> tuple[str, Path]:
    """fed under two hashes (two pairs of H1, one of H2) and another federation, other."""
    return make_storage({
        "fed/0-1": pair_attrs("fed", H1, (0, 1)),
        "fed/1-2": pair_attrs("fed", H1, (1, 2)),
        "fed/2-3": pair_attrs("fed", H2, (2, 3)),
        "other/0-1": pair_attrs("other", H2[::-1], (0, 1)),
    })  # fmt: skip


def test_status_shows_each_hash_apart(two_hashes, untouched, capsys) -> None:
    url, path = two_hashes
    check = untouched(path)
    capsys.readouterr()
    assert main(["status", "--storage", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"federation fed is stored under 2 federation hashes ({H1}, {H2})")
    # One block per federation: its head, then its own summary (never 4 pairs pooled).
    assert out[1] == f"federation fed ({H1}):" and out[2].startswith("0/2 pairs answered")
    assert out[3].startswith("0-1 ") and out[4].startswith("1-2 ")
    assert out[5] == f"federation fed ({H2}):" and out[6].startswith("0/1 pairs answered")
    assert out[7].startswith("2-3 ")
    assert out[8] == f"federation other ({H2[::-1]}):" and out[9].startswith("0/1 pairs")
    assert not any("/4 pairs" in line or "/3 pairs" in line for line in out)

    assert main(["status", "--storage", url, "--federation", H2]) == 0
    only = capsys.readouterr().out.splitlines()
    assert only[0].startswith("0/1 pairs answered") and only[1].startswith("2-3 ")
    assert len(only) == 2
    check()


def test_export_rows_keep_their_hash_and_federation_picks_one(two_hashes, untouched, capsys):
    url, path = two_hashes
    check = untouched(path)
    capsys.readouterr()
    assert main(["export", "--storage", url, "--federation", "fed"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["study"], r["federation_hash"]) for r in rows] == [
        ("fed/0-1", H1), ("fed/1-2", H1), ("fed/2-3", H2)]  # fmt: skip
    assert main(["export", "--storage", url, "--federation", H1]) == 0
    assert [r["study"] for r in json.loads(capsys.readouterr().out)] == ["fed/0-1", "fed/1-2"]
    check()


def test_report_of_a_name_under_two_hashes_is_one_line(two_hashes, tmp_path, untouched, capsys):
    """The report is of one federation: it names both hashes and how to pick one."""
    url, path = two_hashes
    check = untouched(path)
    out = tmp_path / "r.html"
    err = refused(["report", "--storage", url, "--federation", "fed", "--out", str(out)], capsys)
    assert H1 in err and H2 in err and "--federation HASH" in err
    assert not out.exists()
    check()
