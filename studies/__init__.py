"""The shipped study configs (TOML, one federation each), installed as package data so that
``dkd-tune --config fashion-mnist`` finds them from any folder: ``objectives.config`` reads them
through :data:`DIR`. Holds no code beyond that path."""

from pathlib import Path

#: The folder of the shipped ``*.toml`` study configs, in a checkout and in an installed wheel.
DIR = Path(__file__).resolve().parent
