"""What every command shares beyond its flags: printing a progress line, and a read-only
command's storage, which must exist already (a mistyped path must not create an empty database)."""

from __future__ import annotations

from tuner.errors import UsageError

from .flags import PROG


def say(message: str) -> None:
    """A run's progress line; it may name studies from the storage, so control characters are
    shown escaped (tuner.views.terminal)."""
    from tuner.views.terminal import printable

    print(printable(message), flush=True)


def existing(url: str) -> None:
    """Read-only commands must not create an empty database where the user mistyped a path."""
    from tuner.store.storage import sqlite_path

    try:
        path = sqlite_path(url)
    except Exception:
        return  # check_storage gives the one-line message
    if path is not None and not path.exists():
        raise UsageError(f"no database at {path}: run {PROG} first or pass --storage")


def existing_storage(url: str, *, read_only: bool = True, live: bool = False):
    """The storage of a read command: it must exist already and answer. ``read_only`` (all but
    ``dashboard --allow-edits``) opens it so that nothing can be written (issue 27)."""
    from tuner.store.db import open_storage
    from tuner.store.storage import check_storage

    existing(url)
    check_storage(url, read_only=read_only)
    return open_storage(url, read_only=read_only, live=live)
