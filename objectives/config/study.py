"""StudyConfig: a whole study config, built from the sections of :mod:`.schema`.

Its own module so that :mod:`.hashing` can sit between the sections it hashes and the
config that exposes the hash (``StudyConfig.federation_hash``), with no import circle.
"""

# The section defaults below are instances of frozen (immutable) dataclasses, safe to share; ruff
# sees that only for dataclasses defined in the same module.
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..topology import neighbours
from .hashing import federation_hash, federation_key, pair_key, partition_digests
from .schema import (
    CompareConfig,
    DataConfig,
    FederationConfig,
    KDRecipe,
    ModelConfig,
    NeighbourhoodConfig,
    ParticipantConfig,
    TopologyConfig,
    TrainRecipe,
    partition_file,
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
        return federation_hash(self._federation_key)

    @functools.cached_property
    def _federation_key(self) -> dict[str, Any]:
        return federation_key(
            seed=self.seed,
            data=self.data,
            federation=self.federation,
            model=self.model,
            pretrain=self.pretrain,
            participants=self.participants,
        )

    @functools.cached_property
    def _partition_rows(self) -> dict[str, Any] | None:
        path = partition_file(self.federation.partition)
        return partition_digests(path) if path is not None and self.participants else None

    def pair_key(self, a: int, b: int) -> dict[str, Any]:
        """What identifies the KD round of participants ``a`` and ``b`` in this federation, as
        plain data (:func:`~objectives.config.hashing.pair_key`): the part of the federation
        hash that a pair study keeps when participants join or leave."""
        return pair_key(self._federation_key, self._partition_rows, (a, b))

    def pair_hash(self, a: int, b: int) -> str:
        """The hash of :meth:`pair_key`, as the federation hash is of the federation's key."""
        return federation_hash(self.pair_key(a, b))

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
