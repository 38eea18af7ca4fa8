"""The config schema: the frozen dataclasses of a study config's sections, the names they accept,
and the checks and parsers of single values that their fields carry as metadata.

:func:`objectives.config.parsing.parse_config` reads these checks off the fields, so a field's
rule lives next to its default. Nothing here reads files or knows the federation hash.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..topology import TOPOLOGIES, parse_edges

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
    # A huge int overflows math.isfinite()/float(): bound ints before, so it is this one line.
    ok = isinstance(value, list | tuple) and all(
        isinstance(v, int | float)
        and not isinstance(v, bool)
        and (not isinstance(v, int) or abs(v) <= 2**63 - 1)
        and math.isfinite(v)
        for v in value
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


#: The most participants a federation may have. Pairs grow as n²: each is an Optuna study, and
#: loading a config builds the clients' graph, so 10⁹ made loading alone run for minutes.
MAX_PARTICIPANTS = 1000


@dataclass(frozen=True)
class FederationConfig:
    """How the training split is shared among participants."""

    participants: int = field(
        default=10,
        metadata=_check(
            lambda v: 2 <= v <= MAX_PARTICIPANTS,
            f"in 2..{MAX_PARTICIPANTS} (every pair is a study: {MAX_PARTICIPANTS:,} participants "
            f"are already {MAX_PARTICIPANTS * (MAX_PARTICIPANTS - 1) // 2:,} pairs)",
        ),
    )
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
    Its part of the federation hash: :func:`objectives.config.hashing.participant_key`.
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

    def describe(self) -> str:
        """``Name(k=v, ...)``: the architecture as a person reads it."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.model_name}({args})"


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
