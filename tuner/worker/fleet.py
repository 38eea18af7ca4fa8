"""What every worker of a run, on whatever machine, must share with the process that started it.

* The federation bundle, by content. The federation hash names the recipe of a bundle, not its
  bytes: pre-training on another machine (another GPU, another BLAS) gives other weights under the
  same hash. So a run records a digest of its bundle's tensors in every study, and a worker whose
  bundle differs, or that has none, refuses to start (one line saying where to get the right one)
  instead of silently tuning against other teachers.
* The worker settings (``precision``, heartbeat ``interval`` and ``grace``): a joining worker uses
  the run's unless told otherwise, so that one machine's heartbeat check does not declare
  another's live trials dead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import optuna
import torch

from objectives import FederationBundle
from tuner.errors import StorageError
from tuner.store.storage import mask

#: Study user attrs written by a run.
DIGEST_ATTR = "bundle_digest"
SETTINGS_ATTR = "worker_settings"

_DIGESTS: dict[int, str] = {}  # id(bundle) -> digest: hashing ~30 MB once per process


def bundle_digest(bundle: FederationBundle) -> str:
    """A SHA-256 (16 hex digits) over the bundle's tensors: weights, cached logits, accuracies
    and partition, with their dtypes and shapes. Independent of file layout and of meta.json."""
    if id(bundle) not in _DIGESTS:
        h = hashlib.sha256()

        def add(name: str, t: torch.Tensor) -> None:
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

        for i, state in enumerate(bundle.states):
            for key in sorted(state):
                add(f"states.{i}.{key}", state[key])
        for name in ("train_logits", "test_logits", "accuracy", "local_accuracy"):
            add(name, getattr(bundle, name))
        add("public", bundle.partition.public)
        for i, part in enumerate(bundle.partition.participants):
            add(f"participant.{i}", part)
        _DIGESTS[id(bundle)] = h.hexdigest()[:16]
    return _DIGESTS[id(bundle)]


def check_bundle(
    storage: optuna.storages.RDBStorage,
    url: str,
    names: Iterable[str],
    bundle: FederationBundle,
) -> None:
    """Refuse (StorageError, nothing written) when one of the studies ``names`` that exist was
    tuned with another bundle of the same federation hash. One of another hash is a pair that
    a grown federation keeps (tuner.kinds.growth checked it): it takes this bundle."""
    mine, wanted = bundle_digest(bundle), set(names)
    for study in storage.get_all_studies():
        recorded = study.user_attrs.get(DIGEST_ATTR)
        if study.user_attrs.get("federation_hash") != bundle.hash:
            continue
        if study.study_name in wanted and recorded is not None and recorded != mine:
            where = bundle.path or "memory"
            raise StorageError(
                f"the bundle at {where} (digest {mine}) is not the one study {study.study_name} "
                f"in {mask(url)} was tuned with (digest {recorded}): use the run's bundle folder "
                "from the machine that started it, shared (--bundles DIR) or copied"
            )


def record_bundle(
    storage: optuna.storages.RDBStorage, study_ids: Iterable[int], bundle: FederationBundle
) -> None:
    """Write the bundle digest into studies that have none yet (check_bundle ran before)."""
    mine = bundle_digest(bundle)
    for study_id in study_ids:
        if storage.get_study_user_attrs(study_id).get(DIGEST_ATTR) is None:
            storage.set_study_user_attr(study_id, DIGEST_ATTR, mine)


def record_settings(
    storage: optuna.storages.RDBStorage, study_ids: Iterable[int], settings: dict[str, Any]
) -> None:
    """The run's worker settings, which ``dkd-tune worker`` takes unless given on its command."""
    for study_id in study_ids:
        if storage.get_study_user_attrs(study_id).get(SETTINGS_ATTR) != settings:
            storage.set_study_user_attr(study_id, SETTINGS_ATTR, settings)


__all__ = [
    "DIGEST_ATTR",
    "SETTINGS_ATTR",
    "bundle_digest",
    "check_bundle",
    "record_bundle",
    "record_settings",
]
