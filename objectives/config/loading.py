"""Loading: study config files found by path or by a shipped config's name, read as TOML and
handed to :func:`~objectives.config.parsing.parse_config` with the ``--set`` overrides applied.

The shipped configs live in the top-level ``studies`` package (package data), so they are found
from any working directory.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path

import studies

from ..errors import ConfigError
from .parsing import apply_overrides, parse_config
from .study import StudyConfig

#: The study configs shipped with the package (package data), found from any working directory.
STUDIES_DIR = studies.DIR
#: The embedded default federation.
DEFAULT_STUDY = "fashion-mnist"


def shipped_configs() -> list[str]:
    """The names of the shipped study configs (``fashion-mnist``, ...)."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.toml"))


def config_path(path: str | Path) -> Path:
    """The config file ``path`` names: a file relative to the working directory; where none
    exists, a shipped config by name (``fashion-mnist``, ``fashion-mnist-n3.toml``, or the old
    in-checkout spelling ``studies/fashion-mnist-n3.toml``)."""
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("studies")):
        return path
    shipped = STUDIES_DIR / f"{path.name.removesuffix('.toml')}.toml"
    return shipped if shipped.is_file() else path


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> StudyConfig:
    """Read and validate a study config file, with ``--set`` style overrides applied. ``path``
    is relative to the working directory (or a shipped config's name, see :func:`config_path`);
    paths inside the file are relative to the file."""
    path = config_path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found (relative to {Path.cwd()}): pass --config with an "
            f"existing file or a shipped config's name ({', '.join(shipped_configs())})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(
        apply_overrides(raw, overrides), source=str(path), base=path.resolve().parent
    )
