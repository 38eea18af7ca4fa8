"""The tuner's user-facing errors: one line that says what is wrong and how to fix it.

They derive from ``objectives.DkdError`` so the CLI handles every error of both packages the same
way: print the message on stderr, exit 2, no traceback.
"""

from __future__ import annotations

from objectives import DkdError


class UsageError(DkdError):
    """A command-line value or a [search] field is malformed or out of range."""


class StorageError(DkdError):
    """The storage URL cannot be opened, or what it holds conflicts with this run."""


class RunError(DkdError):
    """A run ended without reaching its budget (e.g. a pair whose trials keep failing)."""


class DatabaseGone(RunError):
    """The database stopped answering in the middle of a run (exit 1: rerun once it is back)."""


class StoredCodeError(StorageError):
    """A stored config names code (a ``module:callable`` model) and no config file of this
    machine was given to take it from: a database is data, never code (docs/design.md §10)."""
