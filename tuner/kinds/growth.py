"""A federation that grows (docs/design.md §10 "One name, one federation"): the one owner of who
may write studies under a federation name, and of what a run that grows the federation writes.

A federation name stands for one federation hash in a storage, so the read side never pools two
configs. A config with another hash under a stored name is refused, except where it *grows* the
federation: each stored pair study of the name (a pair study or its confirmation) is

* *kept* when both its participants are in the config and its pair key (the two participants'
  models, checkpoints and partition rows, the public set, the dataset, the seed:
  ``StudyConfig.pair_key``) and KD recipe are unchanged: the run moves it to the new hash;
* *left* when one of its participants is not in the config any more (removed from the end):
  marked, kept in the storage, no longer part of the federation (readers skip it; a config
  that brings the participant back unchanged takes the study back).

Anything else that differs (a checkpoint, a partition row, the public set, the KD recipe, a
drawn partition's participant count, a neighbourhood study) is refused in one line naming it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna

from objectives import StudyConfig
from objectives.config import pair_change
from tuner.store.adapter import FrozenStudy, study_id_of
from tuner.store.storage import mask

from .base import config_record

#: The pair study's identity within its federation (``StudyConfig.pair_key``) and its hash.
PAIR_KEY, PAIR_HASH = "pair_key", "pair_hash"
#: The federation hashes a kept study was set up or grown under before its present one.
GROWN_FROM = "grown_from"
#: On a study one of whose participants left: the federation hash it is no longer part of.
LEFT = "left_federation"

_FIX = "use another federation name (`name` in the config, or --set name=...) or another --storage"


def pair_identity(config: StudyConfig, target: tuple[int, ...]) -> dict[str, Any]:
    """The attrs that say which pair of which federation a pair study is about."""
    return {PAIR_KEY: config.pair_key(target[0], target[1]),
            PAIR_HASH: config.pair_hash(target[0], target[1])}  # fmt: skip


def has_left(attrs: dict[str, Any]) -> bool:
    """True for a study one of whose participants left its federation (readers skip it)."""
    return bool(attrs.get(LEFT))


@dataclass(frozen=True)
class Growth:
    """What a config does to the stored studies of its federation name."""

    keep: tuple[FrozenStudy, ...] = ()  # under another hash (or left): taken into this one
    leave: tuple[FrozenStudy, ...] = ()  # a participant of theirs is not in the config
    refusal: str | None = None  # why the config may not write under the name at all

    @property
    def changes(self) -> bool:
        return bool(self.keep or self.leave)


def members(name: str, studies: Iterable[FrozenStudy]) -> list[FrozenStudy]:
    """dkd-tune's studies of federation ``name`` (left ones included), sorted by name."""
    return sorted(
        (s for s in studies
         if s.user_attrs.get("federation") == name and "federation_hash" in s.user_attrs),
        key=lambda s: s.study_name,
    )  # fmt: skip


def plan(name: str, config: StudyConfig, studies: Iterable[FrozenStudy], url: str) -> Growth:
    """What ``config`` (of federation ``name``) keeps, lets leave or is refused for in a storage
    at ``url`` holding ``studies``. Reads only."""
    mine, n = config.federation_hash, config.federation.participants
    kd = config_record(config)["kd"]
    keep: list[FrozenStudy] = []
    leave: list[FrozenStudy] = []
    for s in members(name, studies):
        a = s.user_attrs
        pair = a.get("pair")
        if pair is not None and max(pair) >= n:  # a participant of it is not in this config
            if not has_left(a):
                leave.append(s)
            continue
        if a["federation_hash"] == mine:
            if has_left(a):  # its participant is back, as it was (same federation hash)
                keep.append(s)
            continue
        if pair is None or PAIR_KEY not in a:  # a neighbourhood study, or one set up before
            return Growth(refusal=_another(name, mine, a["federation_hash"], s, url))
        change = pair_change(a[PAIR_KEY], config.pair_key(*pair))
        if change is None and a.get("kd_recipe") != kd:
            changed = sorted(k for k in kd if (a.get("kd_recipe") or {}).get(k) != kd[k])
            change = f"KD recipe ([kd] {', '.join(changed)})"
        if change is not None:
            return Growth(refusal=(
                f"federation {name} in {mask(url)} holds pair {pair[0]}-{pair[1]} (study "
                f"{s.study_name}), and this config changes its {change}: a federation keeps its "
                "tuned pairs as they are (participants are added at the end and removed from "
                f"the end); to tune the changed pair, {_FIX}"
            ))  # fmt: skip
        keep.append(s)
    return Growth(tuple(keep), tuple(leave))


def _another(name: str, mine: str, theirs: str, study: FrozenStudy, url: str) -> str:
    return (
        f"federation {name} is already in {mask(url)} under federation hash {theirs} (e.g. study "
        f"{study.study_name}); this config's is {mine}, another federation under the same name: "
        f"{_FIX}"
    )


def federation_clash(name: str, studies: Iterable[FrozenStudy], url: str) -> str | None:
    """Why a worker or ``confirm``, which join what is stored, may not write studies of
    federation ``name`` to a storage holding ``studies``: the name holds two hashes, left
    studies aside (one line, with the fix); None if it may. A run's config is :func:`plan`'s."""
    example: dict[str, str] = {}  # a study of each stored hash, to name in the line
    for s in members(name, studies):
        if not has_left(s.user_attrs):
            example.setdefault(s.user_attrs["federation_hash"], s.study_name)
    if len(example) < 2:
        return None
    shown = ", ".join(f"{h} (e.g. study {example[h]})" for h in sorted(example))
    return (
        f"federation {name} is stored in {mask(url)} under {len(example)} federation hashes, "
        f"{shown}: different configs under one name, and a run adds to neither; rerun one with "
        "another federation name (`name` in its config) or in another --storage"
    )


def summary(name: str, growth: Growth) -> str | None:
    """The run's line on what it kept and let leave (None when the federation did not change):
    ``federation X grows from hash H: pairs 0-1, 0-2 kept as tuned; pair 2-3 left``."""
    if not growth.changes:
        return None

    def pairs(studies: tuple[FrozenStudy, ...]) -> str:
        found = sorted({tuple(s.user_attrs["pair"]) for s in studies if "pair" in s.user_attrs})
        return ", ".join(f"{a}-{b}" for a, b in found) or "none"

    hashes = sorted({s.user_attrs["federation_hash"] for s in growth.keep + growth.leave})
    parts = [f"pairs {pairs(growth.keep)} kept as tuned"] if growth.keep else []
    parts += [f"pairs {pairs(growth.leave)} left (their participant is not in the config)"
              ] if growth.leave else []  # fmt: skip
    return f"federation {name} grows from hash {', '.join(hashes)}: {'; '.join(parts)}"


def grow(
    storage: optuna.storages.RDBStorage,
    config: StudyConfig,
    growth: Growth,
    attrs: dict[str, Any],
) -> None:
    """Write what :func:`plan` decided: each kept study moves to the config's federation hash
    (with ``attrs``, the new bundle's digest) and remembers the hash it came from; each study
    whose participant left is marked. Runs after every check passed."""
    mine = config.federation_hash
    for s in growth.keep:
        a = s.user_attrs
        grown = list(a.get(GROWN_FROM, []))
        if a["federation_hash"] != mine:
            grown.append(a["federation_hash"])
        new = {"federation_hash": mine, "config": config_record(config), GROWN_FROM: grown,
               LEFT: None, **pair_identity(config, a["pair"]), **attrs}  # fmt: skip
        for key, value in new.items():
            if a.get(key) != value:
                storage.set_study_user_attr(study_id_of(s), key, value)
    for s in growth.leave:
        storage.set_study_user_attr(study_id_of(s), LEFT, mine)


__all__ = [
    "GROWN_FROM",
    "LEFT",
    "PAIR_HASH",
    "PAIR_KEY",
    "Growth",
    "federation_clash",
    "grow",
    "has_left",
    "members",
    "pair_identity",
    "plan",
    "summary",
]
