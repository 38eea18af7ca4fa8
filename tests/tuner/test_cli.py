"""The command line: bad input is one line on stderr, exit code 2, no traceback, and the
database exactly as it was; status and export read the database."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from tuner_helpers import cli, db_digest

from tuner import pair_rows, tune
from tuner.cli import main
from tuner.store.storage import get_storage

SECRET = "s3cr3t-pw"


@pytest.fixture(scope="module")
def run_db(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A database holding a finished small run, that every bad command must leave untouched."""
    from tuner import TuneOptions

    folder = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{folder / 'run.db'}"
    tune(
        TuneOptions(
            confirm=0,  # bad input must leave a finished run untouched: fewer rows, same check
            config=tiny["config"],
            bundles=tiny["bundles"],
            storage=url,
            pairs="0-1,1-2",
            trials=3,
            pruner="none",
            progress="quiet",
        ),
        say=lambda _m: None,
    )
    return {"url": url, "folder": folder, **tiny}


def bad_inputs(d: dict) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, a phrase the one-line message must contain)."""
    folder = Path(d["folder"])
    (folder / "a-file").write_text("not a folder")
    base = ["--config", d["config"], "--bundles", d["bundles"], "--storage", d["url"]]
    return {
        "malformed pairs": ([*base, "--pairs", "0-1,2"], "bad --pairs item '2'"),
        "participant out of range": ([*base, "--pairs", "0-4"], "participant 4 does not exist"),
        "pair with itself": ([*base, "--pairs", "2-2"], "cannot pair with itself"),
        "zero trials": ([*base, "--trials", "0"], "--trials 0 must be"),
        "negative trials": ([*base, "--trials", "-3"], "--trials -3 must be"),
        "non-numeric trials": ([*base, "--trials", "lots"], "is not a whole number"),
        "unknown sampler": ([*base, "--sampler", "cmaes"], "unknown sampler 'cmaes'"),
        "unknown pruner": ([*base, "--pruner", "asha"], "unknown pruner 'asha'"),
        "missing config": (
            ["--config", str(folder / "nope.toml"), "--storage", d["url"]],
            "not found",
        ),
        "unknown --set key": ([*base, "--set", "kd.lrr=0.1"], "unknown field [kd].lrr"),
        "missing device": ([*base, "--devices", "cuda:3"], "cuda:3 does not exist"),
        "unwritable storage path": (
            ["--config", d["config"], "--storage", f"sqlite:///{folder / 'a-file' / 'x.db'}"],
            "not writable",
        ),
        "storage folder missing": (
            ["--config", d["config"], "--storage", f"sqlite:///{folder / 'no' / 'x.db'}"],
            "not writable",
        ),
        "unreachable storage": (
            [
                "--config",
                d["config"],
                "--bundles",
                d["bundles"],
                "--storage",
                f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/dkd",
            ],
            "unreachable",
        ),
        "unknown export format": (
            ["export", "--storage", d["url"], "--format", "xml"],
            "invalid choice",
        ),
        "status of a missing database": (
            ["status", "--storage", f"sqlite:///{folder / 'typo.db'}"],
            "no database at",
        ),
    }


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_bad_input_in_process(run_db, capsys: pytest.CaptureFixture) -> None:
    """Every bad input through the real entry point (main), checked one by one."""
    cases = bad_inputs(run_db)
    digest, files = db_digest(run_db["url"]), _files(run_db["folder"])
    for name, (args, phrase) in cases.items():
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("dkd-tune: error: "), (name, err)
        assert phrase in err, (name, err)
        assert "Traceback" not in err and SECRET not in err + out, name
        assert db_digest(run_db["url"]) == digest, name
        assert _files(run_db["folder"]) == files, name  # no database file was created


def test_bad_input_as_real_processes(run_db) -> None:
    """One of them as a real process (exit status and stderr as a shell sees them): the one that
    goes furthest (config loaded, storage tried) and carries a password. The others leave the
    entry point the same way (one line, exit 2), as the in-process test above checks case by
    case; a fresh interpreter costs seconds of imports each."""
    cases = bad_inputs(run_db)
    chosen = ["unreachable storage"]
    digest = db_digest(run_db["url"])
    procs = {
        n: subprocess.Popen(
            cli(*cases[n][0]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in chosen
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert cases[name][1] in err and SECRET not in err + out
    assert db_digest(run_db["url"]) == digest


def test_status_and_export_commands(run_db, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    digest = db_digest(run_db["url"])
    assert main(["status", "--storage", run_db["url"], "--wide"]) == 0
    out = capsys.readouterr().out
    assert "tiny/0-1" in out and "tiny/1-2" in out and "3/3" in out
    assert main(["status", "--storage", run_db["url"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "pairs answered" in out[0] and all(len(line) <= 120 for line in out)
    assert [line.split()[0] for line in out[1:]] == ["0-1", "1-2"]
    rows = pair_rows(get_storage(run_db["url"]))
    target = tmp_path / "best.csv"
    assert (
        main(["export", "--storage", run_db["url"], "--format", "csv", "--out", str(target)]) == 0
    )
    table = list(csv.DictReader(target.open()))
    assert [r["study"] for r in table] == [r["study"] for r in rows]
    assert [float(r["best_gain"]) for r in table] == [r["best_gain"] for r in rows]
    assert main(["export", "--storage", run_db["url"], "--federation", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(rows))
    assert db_digest(run_db["url"]) == digest  # reading never writes


def test_help_has_examples_for_every_command(capsys: pytest.CaptureFixture) -> None:
    from tuner.cli import COMMANDS

    for command in ([], *([c] for c in COMMANDS)):
        with pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"dkd-tune {' '.join(command)}".strip() in text
        assert "{PROG}" not in text, text  # no placeholder left unformatted
        if not command:  # the tuning's help lists every command of the table
            assert all(c in text.split("examples:")[0] for c in COMMANDS)
