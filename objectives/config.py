"""Study configs: TOML files in ``studies/`` read into typed, validated dataclasses.

Precedence is override (``--set section.key=value``) > file > dataclass default. Every field is
checked for type and range, and an unknown field is named with the known ones, so a typo fails
loudly instead of silently using a default. The ``[search]`` table belongs to the tuner and is
passed through unvalidated.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .topology import TOPOLOGIES, neighbours, parse_edges

#: Bump when the bundle's content or layout changes, or when model or training code changes what
#: pre-training produces, so a bundle built by other code never shares a hash with this one.
#: 2: channels_last models (pre-trained weights differ from format 1 in the last bits).
BUNDLE_FORMAT = 2

DATASETS = ("fashion-mnist", "cifar10", "synthetic")
MODELS = ("small-cnn", "resnet18", "small-cnn-2head", "resnet18-2head")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
AUGMENTATIONS = ("none", "flip", "crop", "flip-crop")
#: Transfer sets of the neighbourhood round: the client's own data (the poster's) or public.
NEIGHBOURHOOD_TRANSFER_SETS = ("local", "public")


def _check(predicate: Callable[[Any], bool], rule: str) -> dict[str, Any]:
    """Field metadata: a predicate on the value and the rule it states, for the error message."""
    return {"check": predicate, "rule": rule}


def _one_of(choices: Iterable[str]) -> dict[str, Any]:
    options = tuple(choices)
    return _check(lambda v: v in options, f"one of {', '.join(options)}")


def _at_least(low: float) -> dict[str, Any]:
    return _check(lambda v: v >= low, f">= {low}")


def _positive() -> dict[str, Any]:
    return _check(lambda v: v > 0 and math.isfinite(v), "> 0")


def parse_partition(spec: str) -> tuple[str, float]:
    """Parse a partition spec: ``iid``, ``dirichlet:0.5`` or ``shards:2`` → (kind, argument)."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "iid" and not arg:
            return "iid", 0.0
        if kind == "dirichlet" and float(arg) > 0 and math.isfinite(float(arg)):
            return "dirichlet", float(arg)
        if kind == "shards" and int(arg) >= 1:
            return "shards", int(arg)
    except ValueError:
        pass
    raise ConfigError(
        f"bad partition {spec!r}: write iid, dirichlet:<concentration > 0> or shards:<k >= 1>"
    )


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and where its files are. Synthetic sizes apply only to ``synthetic``."""

    dataset: str = field(default="fashion-mnist", metadata=_one_of(DATASETS))
    root: str = ""  # "" = the dataset's standard place (see objectives.data)
    download: bool = False  # torchvision's download; only on a machine with internet
    train_size: int = field(default=2000, metadata=_at_least(10))
    test_size: int = field(default=500, metadata=_at_least(10))
    classes: int = field(default=10, metadata=_at_least(2))
    image_size: int = field(default=8, metadata=_at_least(4))
    channels: int = field(default=1, metadata=_at_least(1))


@dataclass(frozen=True)
class FederationConfig:
    """How the training split is shared among participants."""

    participants: int = field(default=10, metadata=_at_least(2))
    partition: str = field(
        default="dirichlet:0.5",
        metadata=_check(lambda v: bool(parse_partition(v)), "iid, dirichlet:<a> or shards:<k>"),
    )
    public_size: int = field(default=5000, metadata=_at_least(1))
    min_size: int = field(default=100, metadata=_at_least(1))


@dataclass(frozen=True)
class ModelConfig:
    """The architecture every participant uses; channels and classes come from the dataset."""

    name: str = field(default="small-cnn", metadata=_one_of(MODELS))


@dataclass(frozen=True)
class TrainRecipe:
    """A training recipe: pre-training on local data, or the KD round (see KDRecipe)."""

    epochs: int = field(default=5, metadata=_at_least(1))
    optimizer: str = field(default="sgd", metadata=_one_of(OPTIMIZERS))
    lr: float = field(default=0.05, metadata=_positive())
    momentum: float = field(default=0.9, metadata=_check(lambda v: 0 <= v < 1, "in [0, 1)"))
    weight_decay: float = field(default=5e-4, metadata=_at_least(0))
    batch_size: int = field(default=64, metadata=_at_least(1))
    schedule: str = field(default="cosine", metadata=_one_of(SCHEDULES))
    augmentation: str = field(default="none", metadata=_one_of(AUGMENTATIONS))


@dataclass(frozen=True)
class KDRecipe(TrainRecipe):
    """The one-round KD: a fresh optimizer, ``epochs`` passes over the transfer set.

    ``eval_points`` evaluations happen inside the round (the last one at its end, on the full test
    split); the earlier ones use the first ``eval_subset`` test images so pruning stays cheap.
    """

    epochs: int = field(default=1, metadata=_at_least(1))
    lr: float = field(default=0.01, metadata=_positive())
    weight_decay: float = field(default=0.0, metadata=_at_least(0))
    batch_size: int = field(default=128, metadata=_at_least(1))
    schedule: str = field(default="constant", metadata=_one_of(SCHEDULES))
    augmentation: str = field(
        default="none", metadata=_one_of(("none",))
    )  # teacher logits are cached for the un-augmented inputs
    eval_points: int = field(default=4, metadata=_at_least(1))
    eval_subset: int = field(default=2000, metadata=_at_least(1))
    eval_batch_size: int = field(default=2000, metadata=_at_least(1))


@dataclass(frozen=True)
class TopologyConfig:
    """The clients' graph of the neighbourhood mode (objectives.topology); not in the hash: the
    bundle (pre-training, cached logits) is the same whatever the graph."""

    kind: str = field(default="complete", metadata=_one_of(TOPOLOGIES))
    edges: tuple[tuple[int, int], ...] = field(
        default=(), metadata={"parse": lambda v, where: parse_edges(v, where)}
    )


@dataclass(frozen=True)
class NeighbourhoodConfig:
    """The two-head KD round of the neighbourhood mode: which inputs its KD term is computed on."""

    transfer_set: str = field(default="local", metadata=_one_of(NEIGHBOURHOOD_TRANSFER_SETS))


def _parse_partitions(value: Any, where: str) -> tuple[str, ...]:
    if not (isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value)):
        raise ConfigError(f'{where} must be a non-empty list like ["iid", "dirichlet:0.5"]')
    for v in value:
        parse_partition(v)
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} lists a partition twice: {list(value)!r}")
    return tuple(value)


@dataclass(frozen=True)
class CompareConfig:
    """``dkd-tune compare``: every divergence × aggregation at this T and α, ``seeds`` times, on
    one federation per partition (the config's federation with only the partition changed)."""

    temperature: float = field(default=1.0, metadata=_positive())
    alpha: float = field(default=0.5, metadata=_check(lambda v: 0 <= v <= 1, "in [0, 1]"))
    seeds: int = field(default=3, metadata=_at_least(1))
    partitions: tuple[str, ...] = field(
        default=("iid", "dirichlet:0.5"), metadata={"parse": _parse_partitions}
    )


@dataclass(frozen=True)
class StudyConfig:
    """A whole study config: the federation (hashed into the bundle key) and the KD recipe."""

    name: str
    seed: int = 0
    data: DataConfig = DataConfig()
    federation: FederationConfig = FederationConfig()
    model: ModelConfig = ModelConfig()
    pretrain: TrainRecipe = TrainRecipe()
    kd: KDRecipe = KDRecipe()
    topology: TopologyConfig = TopologyConfig()
    neighbourhood: NeighbourhoodConfig = NeighbourhoodConfig()
    compare: CompareConfig = CompareConfig()
    search: Mapping[str, Any] = field(default_factory=dict)  # the tuner's; not validated here
    source: str = "<defaults>"

    @property
    def federation_hash(self) -> str:
        """Hash of everything that determines the federation bundle (not the KD round or search)."""
        data = {"dataset": self.data.dataset}
        if self.data.dataset == "synthetic":
            data = dataclasses.asdict(self.data)
            del data["root"], data["download"]
        key = {
            "format": BUNDLE_FORMAT,
            "seed": self.seed,
            "data": data,
            "federation": dataclasses.asdict(self.federation),
            "model": dataclasses.asdict(self.model),
            "pretrain": dataclasses.asdict(self.pretrain),
        }
        blob = json.dumps(key, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def neighbours(self) -> tuple[tuple[int, ...], ...]:
        """Each client's neighbours under ``[topology]`` (validated when the config was read)."""
        t = self.topology
        return neighbours(t.kind, self.federation.participants, t.edges)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what a bundle or a study records)."""
        out = dataclasses.asdict(self)
        out["search"] = dict(self.search)
        return out


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


def _suggest(key: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(known)}"


def _typed(where: str, value: Any, kind: type) -> Any:
    """Check a TOML value against a field's type; ints are accepted where floats are expected."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
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
            raise ConfigError(
                f"{source}: unknown field [{section}].{key} ({_suggest(key, fields)})"
            )
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


def parse_config(raw: Mapping[str, Any], source: str = "<config>") -> StudyConfig:
    """Validate a config given as nested dicts (what TOML gives) field by field."""
    kwargs: dict[str, Any] = {"source": source}
    for key, value in raw.items():
        if key in _SECTIONS:
            kwargs[key] = _build_section(source, key, _SECTIONS[key], value)
        elif key in _TOP_LEVEL:
            kwargs[key] = _typed(f"{source}: {key}", value, _TOP_LEVEL[key])
        elif key == "search":
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [search] must be a table")
            kwargs[key] = value
        else:
            known = [*_TOP_LEVEL, *_SECTIONS, "search"]
            raise ConfigError(f"{source}: unknown field {key!r} ({_suggest(key, known)})")
    if "name" not in kwargs:
        raise ConfigError(f"{source}: missing 'name' (the federation name, e.g. fashion-mnist-n10)")
    name = kwargs["name"]
    if not name or any(c in name for c in "/ \t\n"):
        raise ConfigError(f"{source}: name {name!r} must be non-empty without '/' or spaces")
    config = StudyConfig(**kwargs)
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


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> StudyConfig:
    """Read and validate a study config file, with ``--set`` style overrides applied."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found: pass --config with a file from studies/ "
            "(e.g. studies/fashion-mnist.toml)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(apply_overrides(raw, overrides), source=str(path))
