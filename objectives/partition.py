"""Split a training split into a public transfer split and N participants' local data.

Deterministic given the seed (numpy's PCG64 generator). Label skew comes from a Dirichlet draw
per class (the common non-iid benchmark), from sorted label shards, or not at all (``iid``). Or
the user's own split, read from a JSON file (``file:partition.json``): the one their participants
were trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .config import FederationConfig, parse_partition, partition_file
from .errors import FederationError

MAX_REDRAWS = 1000


@dataclass(frozen=True)
class Partition:
    """Indices into the training split: ``public`` belongs to no participant."""

    public: Tensor  # int64, sorted
    participants: tuple[Tensor, ...]  # int64, sorted, disjoint from each other and from public

    def label_distribution(self, labels: Tensor, classes: int) -> Tensor:
        """[participants, classes] share of each label in each participant's local data."""
        counts = torch.stack(
            [torch.bincount(labels[i], minlength=classes) for i in self.participants]
        )
        return counts.double() / counts.sum(1, keepdim=True)


def _dirichlet(
    labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per class, split its samples among participants in Dirichlet(alpha)-drawn proportions."""
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(n, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for p, chunk in enumerate(np.split(members, cuts)):
            parts[p].append(chunk)
    return [np.concatenate(p) for p in parts]


def _shards(labels: np.ndarray, n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sort by label, cut into n·k equal shards, give each participant k random shards."""
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    shards = np.array_split(order, n * k)
    owner = rng.permutation(n * k)
    return [np.concatenate([shards[s] for s in owner[p * k : (p + 1) * k]]) for p in range(n)]


def _index_list(value: object, what: str, where: str, n_total: int) -> np.ndarray:
    """A list of training indices, each in range and listed once."""
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise FederationError(f"{where}: {what} must be a list of training indices (integers)")
    idx = np.asarray(value, dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= n_total)]
    if len(bad):
        raise FederationError(
            f"{where}: {what} has index {int(bad[0])}, out of range: the training split has "
            f"{n_total} images (indices 0..{n_total - 1})"
        )
    if not len(idx):
        raise FederationError(
            f"{where}: {what} is empty: give it the indices of its training images"
        )
    values, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise FederationError(
            f"{where}: {what} lists index {int(values[counts > 1][0])} twice: list each once"
        )
    return np.sort(idx)


def read_partition(path: str | Path, n_total: int, participants: int) -> Partition:
    """The user's partition file: ``{"participants": [[indices], ...], "public": [indices]}``,
    indices into the training split; every image belongs to one participant or public at most."""
    where = f"partition file {path}"
    try:
        blob = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FederationError(
            f"{where} not found: fix [federation].partition (relative to the config file)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FederationError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(blob, dict) or set(blob) != {"participants", "public"}:
        raise FederationError(
            f'{where} must be {{"participants": [[indices], ...], "public": [indices]}}'
        )
    lists = blob["participants"]
    if not isinstance(lists, list):
        raise FederationError(f"{where}: participants must be a list of index lists")
    if len(lists) != participants:
        raise FederationError(
            f"{where} lists {len(lists)} participants, the config has {participants}: give one "
            "index list per participant ([[participants]] table), in order"
        )
    parts = [_index_list(v, f"participant {k}", where, n_total) for k, v in enumerate(lists)]
    public = _index_list(blob["public"], "public", where, n_total)
    owner = np.full(n_total, -1, dtype=np.int64)  # -2: public
    owner[public] = -2
    for k, idx in enumerate(parts):
        taken = idx[owner[idx] != -1]
        if len(taken):
            i = int(taken[0])
            other = "the public split" if owner[i] == -2 else f"participant {owner[i]}"
            raise FederationError(
                f"{where}: index {i} is in participant {k} and in {other}: each training image "
                "belongs to one participant or to public, at most"
            )
        owner[idx] = k
    return Partition(
        public=torch.from_numpy(public), participants=tuple(torch.from_numpy(p) for p in parts)
    )


def make_partition(labels: Tensor, cfg: FederationConfig, seed: int) -> Partition:
    """Draw the public split, then share the rest; re-draw a Dirichlet split that is too small.
    A ``file:`` partition is read from the user's file instead."""
    n_total = len(labels)
    path = partition_file(cfg.partition)
    if path is not None:
        return read_partition(path, n_total, cfg.participants)
    if cfg.public_size + cfg.participants * cfg.min_size > n_total:
        raise FederationError(
            f"the training split has {n_total} samples, fewer than public_size {cfg.public_size} "
            f"+ {cfg.participants} participants x min_size {cfg.min_size}: lower "
            "[federation].public_size, .min_size or .participants"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_total)
    public, rest = np.sort(order[: cfg.public_size]), order[cfg.public_size :]
    y = labels.numpy()[rest]
    kind, arg = parse_partition(cfg.partition)
    for _ in range(MAX_REDRAWS):
        if kind == "iid":
            local = np.array_split(rng.permutation(len(rest)), cfg.participants)
        elif kind == "shards":
            local = _shards(y, cfg.participants, int(arg), rng)
        else:
            local = _dirichlet(y, cfg.participants, arg, rng)
        smallest = min(len(p) for p in local)
        if smallest >= cfg.min_size:
            break
        if kind != "dirichlet":  # only a Dirichlet draw can come out differently next time
            break
    else:
        smallest = -1
    if smallest < cfg.min_size:
        raise FederationError(
            f"partition {cfg.partition} of {len(rest)} samples over {cfg.participants} "
            f"participants leaves one below min_size {cfg.min_size}"
            + (f" after {MAX_REDRAWS} draws" if kind == "dirichlet" else "")
            + ": raise the concentration, lower [federation].min_size or use fewer participants"
        )
    return Partition(
        public=torch.from_numpy(public),
        participants=tuple(torch.from_numpy(np.sort(rest[p])) for p in local),
    )
