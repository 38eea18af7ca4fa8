"""The federation hash: what identifies a federation bundle (its data, partition, participants
and their pre-training; never the KD round or the search), hashed into the bundle's key.

For the user's own data, partition file and participants it covers the files' content, not where
they lie. :class:`~objectives.config.study.StudyConfig` exposes it as ``federation_hash`` and
hands over its sections, so this module needs only :mod:`.schema` (no import circle).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..errors import FederationError, ParticipantError
from ..sources import file_sha256, image_tree_sha256, torchvision_sha256
from .schema import (
    TORCHVISION_PREFIX,
    DataConfig,
    FederationConfig,
    ModelConfig,
    ParticipantConfig,
    TrainRecipe,
    is_user_dataset,
    partition_file,
)

#: Bump when the bundle's content or layout changes, or when model or training code changes what
#: pre-training produces, so a bundle built by other code never shares a hash with this one.
#: 2: channels_last models (pre-trained weights differ from format 1 in the last bits).
BUNDLE_FORMAT = 2

#: The fields of [data] that shape a synthetic dataset (its hash key).
_SYNTHETIC_KEYS = ("dataset", "train_size", "test_size", "classes", "image_size", "channels")


def federation_hash(key: dict[str, Any]) -> str:
    """The federation hash of a :func:`federation_key` (or the pair hash of a :func:`pair_key`):
    the first 16 hex digits of the SHA-256 of the key as sorted JSON."""
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def partition_digests(path: str) -> dict[str, Any]:
    """The SHA-256 of each row of the user's partition file (``public`` and each participant's
    sorted indices), so a pair's key covers its two participants' data and not the others'."""
    try:
        with open(path) as f:
            blob = json.load(f)
        rows = [blob["public"], *blob["participants"]]
        digests = [_rows_sha256(r) for r in rows]
    except OSError:
        raise FederationError(
            f"partition file {path} not found: fix [federation].partition (relative to the "
            "config file)"
        ) from None
    except (ValueError, TypeError, KeyError):
        raise FederationError(
            f'partition file {path} must be {{"participants": [[indices], ...], "public": '
            "[indices]}"
        ) from None
    return {"public": digests[0], "participants": digests[1:]}


def _rows_sha256(indices: list[int]) -> str:
    return hashlib.sha256(json.dumps(sorted(int(i) for i in indices)).encode()).hexdigest()


def pair_key(
    key: dict[str, Any], rows: dict[str, Any] | None, pair: tuple[int, int]
) -> dict[str, Any]:
    """What identifies the KD round of participants ``pair`` (docs/design.md §10, a federation
    that grows): of :func:`federation_key` ``key``, only what the round of these two reads.

    That split exists for the user's own participants with a partition file (``rows``: its
    :func:`partition_digests`): there each participant's data is its own row, and adding or
    removing another participant changes nothing of this pair's round. A drawn partition
    (Dirichlet, shards, iid) is redrawn for every participant when their number changes, so
    there the pair's key is the whole federation's."""
    if rows is None or "participants" not in key:
        return {"federation": federation_hash(key), "pair": list(pair)}
    federation = {k: v for k, v in key["federation"].items() if k not in ("participants",
                                                                          "partition")}  # fmt: skip
    return {
        "format": key["format"],
        "seed": key["seed"],
        "data": key["data"],
        "federation": federation,
        "public_sha256": rows["public"],
        "participants": {
            str(i): {**key["participants"][i], "data_sha256": rows["participants"][i]} for i in pair
        },
    }


#: How :func:`pair_change` names each part of a :func:`pair_key`.
_PARTS = {
    "pair": "pair",
    "format": "bundle format (dkd-tune's)",
    "seed": "seed",
    "data": "dataset",
    "public_sha256": "public set",
}
_PARTICIPANT_PARTS = {
    "checkpoint_sha256": "checkpoint",
    "model": "model",
    "kwargs": "model kwargs",
    "data_sha256": "data (its row of the partition file)",
}


def pair_change(stored: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two :func:`pair_key` values, in words (``public set, participant
    2's checkpoint``); None when they are equal."""
    changed = []
    for part in sorted((set(stored) | set(new)) - {"participants"}):
        if part == "federation" and stored.get(part) != new.get(part):
            changed.append(
                f"federation hash ({stored.get(part)}, now {new.get(part)}: with a drawn "
                "partition every pair's data depends on the whole federation)"
            )
        elif stored.get(part) != new.get(part):
            changed.append(_PARTS.get(part, part))
    old_p, new_p = stored.get("participants", {}), new.get("participants", {})
    for i in sorted(set(old_p) | set(new_p), key=int):
        a, b = old_p.get(i, {}), new_p.get(i, {})
        for part in sorted(set(a) | set(b)):
            if a.get(part) != b.get(part):
                changed.append(f"participant {i}'s {_PARTICIPANT_PARTS.get(part, part)}")
    return ", ".join(dict.fromkeys(changed)) or None


def federation_key(
    *,
    seed: int,
    data: DataConfig,
    federation: FederationConfig,
    model: ModelConfig,
    pretrain: TrainRecipe,
    participants: tuple[ParticipantConfig, ...],
) -> dict[str, Any]:
    """What the federation hash covers, as plain data. The user's own participants replace
    ``model`` and ``pretrain`` (they come pre-trained); a built-in federation hashes as it
    always has."""
    d = data
    data_part: dict[str, Any] = {"dataset": d.dataset}
    if d.dataset == "synthetic":
        data_part = {k: v for k, v in dataclasses.asdict(d).items() if k in _SYNTHETIC_KEYS}
    elif is_user_dataset(d.dataset):
        data_part = {
            "dataset": d.dataset,
            "source_sha256": _data_digest(d),
            "channels": d.channels,
            "image_size": d.image_size,
            "mean": list(d.mean),
            "std": list(d.std),
        }
    federation_part = dataclasses.asdict(federation)
    path = partition_file(federation.partition)
    if path is not None:  # the file's content, not where it lies
        try:
            federation_part["partition"] = f"file-sha256:{file_sha256(path)}"
        except OSError:
            raise FederationError(
                f"partition file {path} not found: fix [federation].partition = "
                '"file:<path>" (relative to the config file)'
            ) from None
    key: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "seed": seed,
        "data": data_part,
        "federation": federation_part,
    }
    if participants:
        key["participants"] = [participant_key(p, i) for i, p in enumerate(participants)]
    else:
        key["model"] = dataclasses.asdict(model)
        key["pretrain"] = dataclasses.asdict(pretrain)
    return key


def participant_key(participant: ParticipantConfig, index: int) -> dict[str, Any]:
    """What identifies a participant in the federation hash: the model (by the file's
    content for a file, by name for a package), its kwargs, the checkpoint's content."""
    p = participant
    checkpoint = _digest(p.checkpoint, f"participant {index}: checkpoint", "checkpoint")
    if p.model_file:
        where = f"participant {index}: model file"
        model = {
            "file_sha256": _digest(p.model_file, where, "model"),
            "name": p.model_name,
        }
    else:
        model = {"import": p.model}
    return {"model": model, "kwargs": dict(p.kwargs), "checkpoint_sha256": checkpoint}


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
