"""Study configs: TOML files (the shipped ones in the top-level ``studies`` package, package
data) read into typed, validated dataclasses.

Precedence is override (``--set section.key=value``) > file > dataclass default. Every field is
checked for type and range, and an unknown field is named with the known ones, so a typo fails
loudly instead of silently using a default. The ``[search]`` table belongs to the tuner and is
passed through unvalidated.

A config either describes participants dkd-tune pre-trains itself (``[model]`` + ``[pretrain]``)
or lists the user's own pre-trained ones (``[[participants]]``: a model string and a checkpoint
each). Paths inside a config file (data root, checkpoints, model files, partition file) are
relative to the file; :func:`load_config` makes them absolute, so the parsed config (and what a
study records of it) means the same from any working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import studies

from .errors import ConfigError, FederationError, ParticipantError
from .sources import file_sha256, image_tree_sha256, torchvision_sha256
from .topology import TOPOLOGIES, neighbours, parse_edges

#: The study configs shipped with the package (package data), found from any working directory.
STUDIES_DIR = studies.DIR
#: The embedded default federation.
DEFAULT_STUDY = "fashion-mnist"

#: Bump when the bundle's content or layout changes, or when model or training code changes what
#: pre-training produces, so a bundle built by other code never shares a hash with this one.
#: 2: channels_last models (pre-trained weights differ from format 1 in the last bits).
BUNDLE_FORMAT = 2

DATASETS = ("fashion-mnist", "cifar10", "synthetic")
#: The user's own data: a folder of images per class, an npz file, or a torchvision dataset class.
USER_DATASETS = ("imagefolder", "npz", "torchvision:<ClassName>")
TORCHVISION_PREFIX = "torchvision:"
PARTITION_FILE_PREFIX = "file:"
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


def is_user_dataset(name: str) -> bool:
    """True for the user's own data sources (imagefolder, npz, torchvision:<ClassName>)."""
    return name in ("imagefolder", "npz") or (
        name.startswith(TORCHVISION_PREFIX) and name[len(TORCHVISION_PREFIX) :].isidentifier()
    )


def partition_file(spec: str) -> str | None:
    """The path of a ``file:<path>`` partition spec, None for a drawn partition."""
    return spec[len(PARTITION_FILE_PREFIX) :] if spec.startswith(PARTITION_FILE_PREFIX) else None


def parse_partition(spec: str) -> tuple[str, float]:
    """Parse a partition spec: ``iid``, ``dirichlet:0.5``, ``shards:2`` → (kind, argument);
    ``file:<path>`` → ("file", 0) (the path: :func:`partition_file`)."""
    if partition_file(spec):
        return "file", 0.0
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
        f"bad partition {spec!r}: write iid, dirichlet:<concentration > 0>, shards:<k >= 1> or "
        "file:<partition.json>"
    )


def _parse_floats(value: Any, where: str) -> tuple[float, ...]:
    """A list of finite numbers (``[data].mean`` / ``.std``); an empty list means absent."""
    ok = isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok:
        raise ConfigError(f"{where} must be a list of numbers, one per channel, e.g. [0.286]")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and where its files are. Synthetic sizes apply only to ``synthetic``;
    ``channels``, ``image_size`` describe the images of the user's own data (and of
    ``synthetic``), ``mean``/``std`` the normalisation its participants were trained with."""

    dataset: str = field(
        default="fashion-mnist",
        metadata=_check(
            lambda v: v in DATASETS or is_user_dataset(v),
            f"one of {', '.join(DATASETS + USER_DATASETS)}",
        ),
    )
    root: str = ""  # "" = the dataset's standard place (see objectives.data)
    download: bool = False  # torchvision's download; only on a machine with internet
    train_size: int = field(default=2000, metadata=_at_least(10))
    test_size: int = field(default=500, metadata=_at_least(10))
    classes: int = field(default=10, metadata=_at_least(2))
    image_size: int = field(default=8, metadata=_at_least(4))
    channels: int = field(default=1, metadata=_at_least(1))
    # Per-channel normalisation of the user's data; () = computed from the training split.
    mean: tuple[float, ...] = field(default=(), metadata={"parse": _parse_floats})
    std: tuple[float, ...] = field(default=(), metadata={"parse": _parse_floats})


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
class ParticipantConfig:
    """One of the user's pre-trained participants: how to build its model, where its weights are.

    ``model`` is ``"file.py:Name"`` (a Python file, relative to the config file) or
    ``"package.module:Name"``; ``Name(**kwargs)`` returns an ``nn.Module`` mapping images to
    logits. ``checkpoint`` is a ``state_dict`` saved with ``torch.save``, loaded weights-only.
    """

    model: str
    checkpoint: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_file(self) -> str | None:
        """The Python file of a ``file.py:Name`` model string, None for a package import."""
        where = self.model.rpartition(":")[0]
        return where if where.endswith(".py") else None

    @property
    def model_name(self) -> str:
        return self.model.rpartition(":")[2]

    def hash_key(self, index: int) -> dict[str, Any]:
        """What identifies this participant in the federation hash: the model (by the file's
        content for a file, by name for a package), its kwargs, the checkpoint's content."""
        checkpoint = _digest(self.checkpoint, f"participant {index}: checkpoint", "checkpoint")
        if self.model_file:
            where = f"participant {index}: model file"
            model = {
                "file_sha256": _digest(self.model_file, where, "model"),
                "name": self.model_name,
            }
        else:
            model = {"import": self.model}
        return {"model": model, "kwargs": dict(self.kwargs), "checkpoint_sha256": checkpoint}

    def describe(self) -> str:
        """``Name(k=v, ...)``: the architecture as a person reads it."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.model_name}({args})"


def _digest(path: str, what: str, key: str) -> str:
    """A file's SHA-256 for the federation hash; a missing file is the participant's error."""
    try:
        return file_sha256(path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ParticipantError(
            f"{what} {path} not found: fix [[participants]].{key} (paths are relative to the "
            "config file)"
        ) from None
    except OSError as exc:
        raise ParticipantError(f"{what} {path} cannot be read ({exc.strerror})") from None


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


def parse_partitions(value: Any, where: str) -> tuple[str, ...]:
    """A non-empty list of partition specs, each valid, none twice (``[compare].partitions``,
    and ``dkd-tune compare --partitions``)."""
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
        default=("iid", "dirichlet:0.5"), metadata={"parse": parse_partitions}
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
    #: The user's pre-trained participants, in order; () = pre-trained here from [model]/[pretrain].
    participants: tuple[ParticipantConfig, ...] = ()

    @functools.cached_property
    def federation_hash(self) -> str:
        """Hash of everything that determines the federation bundle (not the KD round or search).

        For the user's own data, partition file and participants it covers the files' content
        (so it reads them once per process); a built-in federation hashes as it always has.
        """
        blob = json.dumps(self._hash_key(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def _hash_key(self) -> dict[str, Any]:
        d = self.data
        data: dict[str, Any] = {"dataset": d.dataset}
        if d.dataset == "synthetic":
            data = {k: v for k, v in dataclasses.asdict(d).items() if k in _SYNTHETIC_KEYS}
        elif is_user_dataset(d.dataset):
            data = {
                "dataset": d.dataset,
                "source_sha256": _data_digest(d),
                "channels": d.channels,
                "image_size": d.image_size,
                "mean": list(d.mean),
                "std": list(d.std),
            }
        federation = dataclasses.asdict(self.federation)
        path = partition_file(self.federation.partition)
        if path is not None:  # the file's content, not where it lies
            try:
                federation["partition"] = f"file-sha256:{file_sha256(path)}"
            except OSError:
                raise FederationError(
                    f"partition file {path} not found: fix [federation].partition = "
                    '"file:<path>" (relative to the config file)'
                ) from None
        key: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "seed": self.seed,
            "data": data,
            "federation": federation,
        }
        if self.participants:
            key["participants"] = [p.hash_key(i) for i, p in enumerate(self.participants)]
        else:
            key["model"] = dataclasses.asdict(self.model)
            key["pretrain"] = dataclasses.asdict(self.pretrain)
        return key

    def check_two_heads(self, mode: str = "the neighbourhood mode") -> None:
        """``mode`` trains a second head: refuse a one-head model, and the user's own
        participants (their models have one head and no second one to add)."""
        if self.participants:
            raise ConfigError(
                f"{mode} needs two-head models, {self.source} lists its own [[participants]] "
                "(one-head models from checkpoints): use it with the pair mode, or a [model] "
                'name = "small-cnn-2head" federation (e.g. fashion-mnist-n3.toml)'
            )
        model = self.model.name
        if not model.endswith("-2head"):
            raise ConfigError(
                f"{mode} needs a two-head model, {self.source} uses {model!r}: set "
                f'[model] name = "{model}-2head" (e.g. fashion-mnist-n3.toml)'
            )

    @property
    def neighbours(self) -> tuple[tuple[int, ...], ...]:
        """Each client's neighbours under ``[topology]`` (validated when the config was read)."""
        t = self.topology
        return neighbours(t.kind, self.federation.participants, t.edges)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what a bundle or a study records); :func:`parse_config`
        reads it back. Without ``participants`` when there are none (so a built-in federation's
        record is what it was), without ``model``/``pretrain`` when there are."""
        out = dataclasses.asdict(self)
        out["search"] = dict(self.search)
        if self.participants:
            del out["model"], out["pretrain"]
            out["participants"] = [
                {"model": p.model, "checkpoint": p.checkpoint, "kwargs": dict(p.kwargs)}
                for p in self.participants
            ]
        else:
            del out["participants"]
        return out


#: The fields of [data] that shape a synthetic dataset (its hash key).
_SYNTHETIC_KEYS = ("dataset", "train_size", "test_size", "classes", "image_size", "channels")


def _data_digest(d: DataConfig) -> str:
    """The content digest of the user's data source (files, not decoded images)."""
    if d.dataset.startswith(TORCHVISION_PREFIX):
        return torchvision_sha256(d.dataset[len(TORCHVISION_PREFIX) :], d.root, d.download)
    # Missing files are objectives.data's to report (it names what is expected); here an empty
    # digest, so the hash is computed and the loader's message is the one the user sees.
    try:
        return file_sha256(d.root) if d.dataset == "npz" else image_tree_sha256(d.root)
    except OSError:
        return "missing"


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
                f"{source}: unknown field [{section}].{key} ({suggest(key, fields)})"
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
            raise ConfigError(
                f"{where}: unknown field {key!r} ({suggest(key, _PARTICIPANT_KEYS)})"
            )
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
    if not name or any(c in name for c in "/ \t\n"):
        raise ConfigError(f"{source}: name {name!r} must be non-empty without '/' or spaces")
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
