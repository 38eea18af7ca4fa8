"""Names read from a shared database are printed escaped (issue 27): a study or federation name
holding ESC, BEL or CR cannot clear the screen, retitle the window or overwrite a line of whoever
runs ``status``, ``export --format csv`` or gets an error line naming it."""

from __future__ import annotations

import unicodedata

import pytest

from tuner.cli import main
from tuner.views.terminal import printable

EVIL = "evil\x1b]0;owned\x07\x1b[2J"  # sets the terminal's title, then clears the screen
STUDY = "fed/0-1\r\x1b[31mFAKE\u202e"  # CR back to the line's start, red, right-to-left


def raw_controls(text: str) -> list[str]:
    """Every control or format character of ``text`` but the newlines that end its lines."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("bell\x07", "bell\\x07"),
        ("cr\rnl\nnul\x00tab\t", "cr\\rnl\\nnul\\x00tab\\t"),
        ("rtl\u202egnp", "rtl\\u202egnp"),
        ("c1\x85\x9b", "c1\\x85\\x9b"),
        ("line\u2028sep", "line\\u2028sep"),
        ("fédé 3-4 ✓", "fédé 3-4 ✓"),  # letters, spaces and symbols stay as they are
    ],
)
def test_printable_escapes_control_characters_only(text: str, shown: str) -> None:
    assert printable(text) == shown


@pytest.fixture
def tampered(make_storage, pair_attrs) -> tuple[str, object]:
    """Two federations, one named with escape sequences, one with a study whose name has them."""
    return make_storage({
        f"{EVIL}/0-1": pair_attrs(EVIL, "1111aaaa1111aaaa", (0, 1)),
        STUDY: pair_attrs("fed", "2222bbbb2222bbbb", (0, 1)),
    })  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [["status"], ["status", "--wide"], ["export", "--format", "csv"]],
)
def test_status_and_export_print_no_raw_control_characters(
    tampered, untouched, capsys, argv: list[str]
) -> None:
    url, path = tampered
    check = untouched(path)
    capsys.readouterr()
    assert main([*argv, "--storage", url]) == 0
    out = capsys.readouterr().out
    assert raw_controls(out) == [], out
    assert "evil\\x1b]0;owned\\x07\\x1b[2J" in out  # shown, escaped
    if argv != ["status"]:  # the answer lines name pairs; the wide table and CSV name studies
        assert "fed/0-1\\r\\x1b[31mFAKE\\u202e" in out
    check()


def test_an_error_line_naming_stored_federations_is_escaped(tampered, untouched, capsys) -> None:
    """``report`` without --federation names every federation in its one line."""
    url, path = tampered
    check = untouched(path)
    capsys.readouterr()
    assert main(["report", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "several federations" in err
    assert raw_controls(err) == [] and "evil\\x1b]0;owned" in err
    check()
