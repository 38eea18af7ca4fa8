"""Parsing: a study config given as nested dicts (what TOML gives) checked field by field into a
:class:`~objectives.config.study.StudyConfig`, and ``--set section.key=value`` overrides.

Every field is checked for type and range (the rules :mod:`.schema` attaches to the fields), and
an unknown field is named with the known ones, so a typo fails loudly instead of silently using a
default. The ``[search]`` table belongs to the tuner and is passed through unvalidated. Paths in
a config (data root, checkpoints, model files, partition file) are made absolute here, relative
to the config file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .schema import (
    PARTITION_FILE_PREFIX,
    CompareConfig,
    DataConfig,
    FederationConfig,
    KDRecipe,
    ModelConfig,
    NeighbourhoodConfig,
    ParticipantConfig,
    TopologyConfig,
    TrainRecipe,
    is_user_dataset,
    partition_file,
)
from .study import StudyConfig

_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "federation": FederationConfig,
    "model": ModelConfig,
    "pretrain": TrainRecipe,
    "kd": KDRecipe,
    "topology": TopologyConfig,
    "neighbourhood": NeighbourhoodConfig,
    "compare": CompareConfig,
}
_TOP_LEVEL = {"name": str, "seed": int}
_PARTICIPANT_KEYS = ("model", "checkpoint", "kwargs")


def suggest(key: str, known: Iterable[str]) -> str:
    """``did you mean 'x'? known: a, b, c`` for an unknown key (the closest known one, if any)."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(known)}"


#: The largest integer a config field takes: what a 64-bit signed integer (a seed for NumPy and
#: torch, an attr in SQLite or PostgreSQL) holds, and all the TOML spec allows (Python's reader
#: takes more).
MAX_INT = 2**63 - 1
#: The largest seed: objectives.bundle seeds participant p with seed * 10_007 + p, which torch
#: takes only below 2**64; 2**32-1 is the usual bound (NumPy's legacy seeds) and leaves room.
MAX_SEED = 2**32 - 1


def _typed(where: str, value: Any, kind: type, high: int = MAX_INT) -> Any:
    """Check a TOML value against a field's type: integers are real ints (not floats, not bools)
    in 0..``high``; floats are finite (ints are accepted where floats are expected)."""
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        # inf/nan pass every >= / > rule of the schema (nan fails them all only by luck), and a
        # huge int would overflow float(): neither is a setting anyone means.
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise ConfigError(f"{where} = {value} is out of range: must be within ±(2**63-1)")
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}: write e.g. 0.001")
        return float(value)
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(
                f"{where} must be a whole number, got {value!r}: write it without quotes, a "
                "decimal point or an exponent, e.g. 3"
            )
        if not 0 <= value <= high:
            bound = "2**63-1" if high == MAX_INT else f"{high:,}"
            if high == MAX_SEED:
                bound = "2**32-1 (participant p is seeded with seed * 10007 + p in 64 bits)"
            raise ConfigError(f"{where} = {value} is out of range: must be in 0..{bound}")
        return value
    if not isinstance(value, kind):
        raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}")
    return value


def _build_section(source: str, section: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{section}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown field [{section}].{key} ({suggest(key, fields)})")
        spec = fields[key]
        where = f"{source}: [{section}].{key}"
        if "parse" in spec.metadata:  # a list field validates itself
            values[key] = spec.metadata["parse"](value, where)
            continue
        value = _typed(
            where, value, {"int": int, "float": float, "str": str, "bool": bool}[spec.type]
        )
        check = spec.metadata.get("check")
        ok = True
        try:
            ok = check is None or check(value)
        except ConfigError:
            ok = False
        if not ok:
            raise ConfigError(f"{where} = {value!r} is invalid: must be {spec.metadata['rule']}")
        values[key] = value
    return cls(**values)


def _absolute(path: str, base: Path | None) -> str:
    """``path`` relative to ``base`` (the config file's folder), made absolute; as it is without
    a base (a config from a study record holds absolute paths already)."""
    if not path or base is None or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def _parse_participant(item: Any, where: str, base: Path | None) -> ParticipantConfig:
    """One ``[[participants]]`` table: its model string checked for form, its paths resolved."""
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table ([[participants]] with model and checkpoint)")
    for key in item:
        if key not in _PARTICIPANT_KEYS:
            raise ConfigError(f"{where}: unknown field {key!r} ({suggest(key, _PARTICIPANT_KEYS)})")
    for key in ("model", "checkpoint"):
        if not isinstance(item.get(key), str) or not item[key]:
            example = '"models.py:TinyNet"' if key == "model" else '"ckpt/participant-0.pt"'
            raise ConfigError(f"{where}: missing {key} (a string, e.g. {key} = {example})")
    kwargs = item.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}.kwargs must be a table, e.g. kwargs = {{ classes = 10 }}")
    module, sep, name = item["model"].rpartition(":")
    if not sep or not module or not name.isidentifier():
        raise ConfigError(
            f'{where}.model = {item["model"]!r}: write "file.py:Name" (a file next to the '
            'config) or "package.module:Name", e.g. "torchvision.models:resnet18"'
        )
    if module.endswith(".py"):
        module = _absolute(module, base)
    return ParticipantConfig(
        model=f"{module}:{name}", checkpoint=_absolute(item["checkpoint"], base), kwargs=kwargs
    )


def _parse_participants(
    raw: dict[str, Any], source: str, base: Path | None
) -> tuple[ParticipantConfig, ...]:
    """``[[participants]]`` (popped from ``raw``), in order; it replaces [model] and [pretrain]
    and sets [federation].participants."""
    items = raw.pop("participants")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: participants must be [[participants]] tables, one each")
    for section in ("model", "pretrain"):
        if section in raw:
            raise ConfigError(
                f"{source}: [{section}] and [[participants]] exclude each other (the listed "
                f"participants come pre-trained): drop [{section}]"
            )
    parts = tuple(
        _parse_participant(item, f"{source}: [[participants]] {i}", base)
        for i, item in enumerate(items)
    )
    federation = raw.setdefault("federation", {})
    if isinstance(federation, dict):
        given = federation.get("participants", len(parts))
        if given != len(parts):
            raise ConfigError(
                f"{source}: [federation].participants = {given} but the config lists "
                f"{len(parts)} [[participants]]: drop [federation].participants (the tables "
                "count) or list every participant"
            )
        federation["participants"] = len(parts)
    return parts


def _resolve_paths(raw: dict[str, Any], base: Path | None) -> None:
    """Make [data].root and a file: partition absolute, relative to the config's folder."""
    data, federation = raw.get("data"), raw.get("federation")
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        data["root"] = _absolute(data["root"], base)
    if isinstance(federation, dict) and isinstance(federation.get("partition"), str):
        path = partition_file(federation["partition"])
        if path:
            federation["partition"] = PARTITION_FILE_PREFIX + _absolute(path, base)


def _check_user_data(raw: Mapping[str, Any], data: DataConfig, source: str) -> None:
    """The user's data needs its image shape and a normalisation that fits its channels;
    built-in datasets have both fixed."""
    given = raw.get("data", {}) if isinstance(raw.get("data"), dict) else {}
    if not is_user_dataset(data.dataset):
        for key in ("mean", "std"):
            if getattr(data, key):
                raise ConfigError(
                    f"{source}: [data].{key} is for the user's own data (imagefolder, npz, "
                    f"torchvision:<ClassName>); {data.dataset} has its own: drop it"
                )
        return
    for key, example in (("channels", 3), ("image_size", 32)):
        if key not in given:
            raise ConfigError(
                f"{source}: [data].{key} is required for {data.dataset} (what the participants "
                f"take), e.g. {key} = {example}"
            )
    if not data.root:
        raise ConfigError(
            f"{source}: [data].root is required for {data.dataset}: the "
            + ("npz file" if data.dataset == "npz" else "folder")
            + " that holds the data, relative to the config file"
        )
    for key in ("mean", "std"):
        values = getattr(data, key)
        if values and len(values) != data.channels:
            raise ConfigError(
                f"{source}: [data].{key} has {len(values)} value(s) but channels = "
                f"{data.channels}: give one per channel"
            )
    if bool(data.mean) != bool(data.std):
        raise ConfigError(f"{source}: give [data].mean and [data].std together, or neither")
    if any(v <= 0 for v in data.std):
        raise ConfigError(f"{source}: [data].std must be > 0 for every channel")


def parse_config(
    raw: Mapping[str, Any], source: str = "<config>", base: str | Path | None = None
) -> StudyConfig:
    """Validate a config given as nested dicts (what TOML gives) field by field. Relative paths
    in it are taken relative to ``base`` (the config file's folder) and made absolute."""
    base = Path(base) if base is not None else None
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    kwargs: dict[str, Any] = {"source": source}
    if "participants" in raw:
        kwargs["participants"] = _parse_participants(raw, source, base)
    _resolve_paths(raw, base)
    for key, value in raw.items():
        if key in _SECTIONS:
            kwargs[key] = _build_section(source, key, _SECTIONS[key], value)
        elif key == "seed":
            kwargs[key] = _typed(f"{source}: seed", value, int, MAX_SEED)
        elif key in _TOP_LEVEL:
            kwargs[key] = _typed(f"{source}: {key}", value, _TOP_LEVEL[key])
        elif key == "search":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [search] must be a table")
            kwargs[key] = value
        else:
            known = [*_TOP_LEVEL, *_SECTIONS, "search", "participants"]
            raise ConfigError(f"{source}: unknown field {key!r} ({suggest(key, known)})")
    if "name" not in kwargs:
        raise ConfigError(f"{source}: missing 'name' (the federation name, e.g. fashion-mnist-n10)")
    name = kwargs["name"]
    # The name is printed raw (status, study names): an ESC, BEL or CR in it would drive the
    # reader's terminal, so only printable characters pass (isprintable() is False for those).
    if not name or not name.isprintable() or any(c in name for c in "/ "):
        raise ConfigError(
            f"{source}: name {name!r} must be non-empty, printable, without '/' or spaces: use "
            "letters, digits, '-', '_' and '.', e.g. fashion-mnist-n10"
        )
    config = StudyConfig(**kwargs)
    _check_user_data(raw, config.data, source)
    try:  # the graph needs the number of participants, so it is checked across sections
        config.neighbours  # noqa: B018
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _parse_value(text: str) -> Any:
    """A --set value as TOML (3, 0.5, true, "x"); anything TOML cannot read is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` (or ``key=value`` at top level) onto a raw config copy."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        path, sep, text = item.partition("=")
        parts = path.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"bad --set {item!r}: write section.key=value, e.g. kd.lr=0.02")
        value = _parse_value(text.strip())
        if len(parts) == 1:
            out[parts[0]] = value
            continue
        table = out
        for part in parts[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"bad --set {item!r}: {part!r} is not a table")
        table[parts[-1]] = value
    return out
