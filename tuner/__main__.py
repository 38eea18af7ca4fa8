"""``python -m tuner`` is ``dkd-tune`` (handy where the console script is not on PATH)."""

from tuner.cli import entry

entry()
