"""Adversarial numbers and names in a study config (issue 27): each is refused at load with one
ConfigError line that names the field and says what to write, quickly, before anything runs."""

import re
import time
from pathlib import Path

import pytest

from objectives import ConfigError, load_config
from objectives.config.schema import MAX_PARTICIPANTS

SHIPPED = Path(__file__).resolve().parents[2] / "studies" / "fashion-mnist.toml"


def copy_config(folder: Path, name_line: str | None = None) -> Path:
    """The shipped Fashion-MNIST config copied into ``folder``, its top-level name line
    replaced by ``name_line`` (TOML text) where given."""
    text = SHIPPED.read_text()
    if name_line is not None:
        text, count = re.subn(r"(?m)^name = .*$", lambda _: name_line, text, count=1)
        assert count == 1
    path = folder / "bad.toml"
    path.write_text(text)
    return path


def refused(path: Path, overrides: list[str] = ()) -> str:
    """The one-line ConfigError message that loading ``path`` with ``overrides`` raises."""
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert str(path) in message  # it says which file
    return message


@pytest.mark.parametrize(
    ("override", "named", "says"),
    [
        ("kd.weight_decay=inf", "[kd].weight_decay", "finite number"),
        ("kd.weight_decay=nan", "[kd].weight_decay", "finite number"),
        ("pretrain.weight_decay=+inf", "[pretrain].weight_decay", "finite number"),
        ("kd.lr=inf", "[kd].lr", "finite number"),
        ("compare.temperature=-inf", "[compare].temperature", "finite number"),
        ("compare.alpha=nan", "[compare].alpha", "finite number"),
        ("pretrain.momentum=nan", "[pretrain].momentum", "finite number"),
        ("kd.weight_decay=" + "9" * 400, "[kd].weight_decay", "out of range"),
    ],
)
def test_non_finite_floats_are_refused(tmp_path: Path, override: str, named: str, says: str):
    message = refused(copy_config(tmp_path), [override])
    assert named in message and says in message


def test_huge_int_in_a_list_of_floats_is_one_line(tmp_path: Path):
    """[data].mean = [10**400] raised OverflowError past the one-line path."""
    user_data = ['data.dataset="npz"', 'data.root="x.npz"', "data.channels=1"]
    overrides = [*user_data, "data.image_size=28", "data.std=[1]", "data.mean=[" + "9" * 400 + "]"]
    message = refused(copy_config(tmp_path), overrides)
    assert "[data].mean" in message and "list of numbers" in message


@pytest.mark.parametrize(
    ("override", "named", "says"),
    [
        ("seed=1e23", "seed", "whole number"),
        ("seed=1.0", "seed", "whole number"),
        ("seed=true", "seed", "whole number"),
        ('seed="7"', "seed", "whole number"),
        ("seed=100000000000000000000000", "seed", "0..2**32-1"),
        ("seed=-1", "seed", "0..2**32-1"),
        (f"seed={2**32}", "seed", "0..2**32-1"),  # seed * 10_007 + p must fit torch's 64 bits
        ("kd.epochs=" + "9" * 30, "[kd].epochs", "0..2**63-1"),
        ("data.train_size=1e4", "[data].train_size", "whole number"),
        ("kd.batch_size=false", "[kd].batch_size", "whole number"),
    ],
)
def test_integers_are_real_ints_in_range(tmp_path: Path, override: str, named: str, says: str):
    message = refused(copy_config(tmp_path), [override])
    assert message.split(": ", 1)[1].startswith(named) and says in message


def test_seed_bounds_are_accepted(tmp_path: Path):
    path = copy_config(tmp_path)
    assert load_config(path, ["seed=0"]).seed == 0
    assert load_config(path, [f"seed={2**32 - 1}"]).seed == 2**32 - 1
    assert load_config(path, [f"kd.epochs={2**63 - 1}"]).kd.epochs == 2**63 - 1


@pytest.mark.parametrize("value", ["1e9", "1000000000", "1001", "12.0"])
def test_participants_are_capped_and_refused_fast(tmp_path: Path, value: str):
    start = time.monotonic()
    message = refused(copy_config(tmp_path), [f"federation.participants={value}"])
    assert time.monotonic() - start < 2  # 10**9 used to run for minutes building the graph
    assert "[federation].participants" in message
    if "." not in value and "e" not in value:  # an int past the cap: the bound and its reason
        assert f"2..{MAX_PARTICIPANTS}" in message and "pairs" in message
    else:
        assert "whole number" in message


def test_participants_at_the_cap_load_quickly(tmp_path: Path):
    start = time.monotonic()
    cfg = load_config(copy_config(tmp_path), [f"federation.participants={MAX_PARTICIPANTS}"])
    assert cfg.federation.participants == MAX_PARTICIPANTS
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    "name_line",
    [
        r'name = "fed\u001b[2J"',  # ESC: clears the screen of whoever runs status
        r'name = "fed\u0007"',  # BEL
        r'name = "fed\rfake"',  # CR: overwrites the start of the line
        r'name = "fed\u0000"',  # NUL
        r'name = "fed\u202egnp"',  # right-to-left override: shows the name reversed
        r'name = "fed\u0085x"',  # NEL, a C1 control
        r'name = "fed/x"',
        r'name = "fed x"',
        'name = ""',
    ],
)
def test_names_with_control_characters_are_refused(tmp_path: Path, name_line: str):
    message = refused(copy_config(tmp_path, name_line))
    assert "name" in message and "printable" in message and "e.g. fashion-mnist-n10" in message


def test_plain_names_still_load(tmp_path: Path):
    assert load_config(copy_config(tmp_path, 'name = "fed_2.a-b"')).name == "fed_2.a-b"
    assert load_config(copy_config(tmp_path, 'name = "fédé"')).name == "fédé"


@pytest.mark.parametrize(
    ("name_line", "override", "named"),
    [
        (None, "kd.weight_decay=inf", "[kd].weight_decay"),
        (None, "seed=1e23", "seed"),
        (None, "federation.participants=1000000000", "[federation].participants"),
        (r'name = "fed\u001b]0;owned\u0007"', None, "name"),
    ],
)
def test_cli_refuses_in_one_line_and_creates_no_database(
    tmp_path: Path, name_line: str | None, override: str | None, named: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
):  # fmt: skip
    """Through the product path: ``dkd-tune --config bad.toml --storage sqlite:///x.db`` in the
    config's folder, through the entry point in this process (the same line and exit code as the
    real process; tests/tuner/test_cli.py runs refused commands as real processes too)."""
    from tuner.cli import main

    copy_config(tmp_path, name_line)
    monkeypatch.chdir(tmp_path)
    command = ["--config", "bad.toml", "--storage", "sqlite:///x.db"]
    if override:
        command += ["--set", override]
    start = time.monotonic()
    code = main(command)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1 and named in err
    assert "\x1b" not in err and "\x07" not in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.db").exists()
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    ("name_line", "override", "named"),
    [
        (None, "kd.weight_decay=inf", "[kd].weight_decay"),
        (None, "seed=1e23", "seed"),
        (None, "federation.participants=1000000000", "[federation].participants"),
        (r'name = "fed\u001b]0;owned\u0007"', None, "name"),
    ],
)
def test_cli_refusal_leaves_an_existing_storage_byte_for_byte(
    tmp_path: Path, make_storage, pair_attrs, untouched, capsys,
    name_line: str | None, override: str | None, named: str,
):  # fmt: skip
    """The same refusals where the storage exists (a shared one holding a run): not a byte of
    it changes. In process: the refusal comes before the storage is opened."""
    from tuner.cli import main

    url, path = make_storage({"fashion-mnist-n10/0-1": pair_attrs("fashion-mnist-n10",
                                                                  "1111aaaa1111aaaa", (0, 1))})
    check = untouched(path)
    argv = ["--config", str(copy_config(tmp_path, name_line)), "--storage", url]
    assert main([*argv, *(["--set", override] if override else [])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "\x1b" not in err
    check()
