"""Pair studies on the RDB: names, user attrs (DESIGN §4), and the default trials exactly once.

One Optuna study per unordered pair, named ``<federation-name>/<a>-<b>``. Its user attrs record
what the trials were run against (federation hash, KD recipe, search space, accuracies before KD),
so a later run with another federation is refused instead of mixing incomparable trials.

Exactly-once defaults: the database's unique study name decides who sets a study up. The process
whose ``create_new_study`` succeeds writes the attrs, enqueues the default trials, and writes
``ready`` last; any other process that finds the study waits for ``ready`` before it reads the
attrs or asks for a trial, so the defaults are both present once and run first. If the creator
died before ``ready``, a waiter finishes the set-up idempotently after a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.study import StudyDirection

from objectives import FederationBundle, StudyConfig

from .errors import StorageError
from .options import Pair
from .space import SearchSpace
from .storage import mask

#: Seconds to wait for another process to finish setting up a study before taking over.
READY_TIMEOUT_S = 60.0


def study_name(federation: str, pair: Pair) -> str:
    return f"{federation}/{pair[0]}-{pair[1]}"


def config_record(config: StudyConfig) -> dict[str, Any]:
    """The config as stored in the study (without its file path, which differs per machine)."""
    out = config.to_dict()
    out.pop("source", None)
    return out


def _expected(config: StudyConfig, space: SearchSpace) -> dict[str, Any]:
    return {
        "federation_hash": config.federation_hash,
        "kd_recipe": config_record(config)["kd"],
        "search": space.to_dict(),
    }


def _conflict(
    name: str, attrs: dict[str, Any], config: StudyConfig, space: SearchSpace, url: str
) -> str | None:
    """Why ``config`` cannot add trials to the existing study ``name`` (None if it can)."""
    want = _expected(config, space)
    fix = f"use another --storage than {mask(url)} or another federation name (--set name=...)"
    if attrs.get("federation_hash") != want["federation_hash"]:
        return (
            f"study {name} holds federation hash {attrs.get('federation_hash')} but the config "
            f"gives {want['federation_hash']}: {fix}"
        )
    if attrs.get("kd_recipe") != want["kd_recipe"]:
        changed = sorted(
            k
            for k in want["kd_recipe"]
            if attrs.get("kd_recipe", {}).get(k) != want["kd_recipe"][k]
        )
        return f"study {name} was run with another KD recipe ([kd] {', '.join(changed)}): {fix}"
    stored = attrs.get("search", {})
    for key in ("divergence", "transfer_set", "position", "aggregation"):
        if stored.get(key) != want["search"][key]:
            return (
                f"study {name} was searched with [search].{key} = {stored.get(key)}, the config "
                f"gives {want['search'][key]} (optuna cannot mix choice sets): {fix}"
            )
    return None


def _wait_ready(
    storage: optuna.storages.RDBStorage, study_id: int, timeout: float = READY_TIMEOUT_S
) -> dict[str, Any] | None:
    """The study's user attrs once its creator wrote ``ready``; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = storage.get_study_user_attrs(study_id)
        if attrs.get("ready"):
            return attrs
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def check_existing(
    storage: optuna.storages.RDBStorage,
    url: str,
    config: StudyConfig,
    space: SearchSpace,
    pairs: Sequence[Pair],
) -> None:
    """Refuse (StorageError, nothing written) if any existing pair study conflicts with config."""
    existing = {s.study_name: s for s in storage.get_all_studies()}
    for pair in pairs:
        name = study_name(config.name, pair)
        if name not in existing:
            continue
        attrs = existing[name].user_attrs
        if not attrs.get("ready"):
            attrs = _wait_ready(storage, existing[name]._study_id) or attrs
        if "federation_hash" not in attrs:
            continue  # its creator died before writing it: setup_study takes over and checks
        reason = _conflict(name, attrs, config, space, url)
        if reason:
            raise StorageError(reason)


def setup_study(
    storage: optuna.storages.RDBStorage,
    url: str,
    config: StudyConfig,
    bundle: FederationBundle,
    space: SearchSpace,
    pair: Pair,
) -> int:
    """Create (or join) the pair's study; return its id once its defaults are enqueued.

    ``config`` is this run's config: ``bundle.config`` may be an earlier run's with the same
    federation hash but another KD recipe or search space (bundles are cached per hash).
    """
    name = study_name(config.name, pair)
    try:
        study_id = storage.create_new_study([StudyDirection.MAXIMIZE], name)
        created = True
    except DuplicatedStudyError:
        study_id = storage.get_study_id_from_name(name)
        created = False
    attrs = None if created else _wait_ready(storage, study_id)
    if attrs is None:  # we created it, or its creator died before finishing
        _write_attrs(storage, study_id, config, bundle, space, pair)
        _enqueue_defaults(optuna.load_study(study_name=name, storage=storage), space)
        storage.set_study_user_attr(study_id, "ready", True)  # last: releases the waiters
        attrs = storage.get_study_user_attrs(study_id)
    reason = _conflict(name, attrs, config, space, url)  # a concurrent creator may differ
    if reason:
        raise StorageError(reason)
    return study_id


def record_run(
    storage: optuna.storages.RDBStorage,
    study_id: int,
    *,
    budget: int,
    sampler: str,
    pruner: str,
    seed: int,
    retries: int,
) -> None:
    """The latest run's settings, which ``dkd-tune worker`` reads to join it."""
    run = {"budget": budget, "sampler": sampler, "pruner": pruner, "seed": seed, "retries": retries}
    if storage.get_study_user_attrs(study_id).get("run") != run:
        storage.set_study_user_attr(study_id, "run", run)


def _write_attrs(
    storage: optuna.storages.RDBStorage,
    study_id: int,
    config: StudyConfig,
    bundle: FederationBundle,
    space: SearchSpace,
    pair: Pair,
) -> None:
    a, b = pair
    attrs = {
        "pair": [a, b],
        "federation": config.name,
        "federation_hash": bundle.hash,
        "accuracy_a": round(float(bundle.accuracy[a]), 4),
        "accuracy_b": round(float(bundle.accuracy[b]), 4),
        "local_accuracy_a": round(float(bundle.local_accuracy[a]), 4),
        "local_accuracy_b": round(float(bundle.local_accuracy[b]), 4),
        "kd_recipe": config_record(config)["kd"],
        "search": space.to_dict(),
        "config": config_record(config),
    }
    for key, value in attrs.items():
        storage.set_study_user_attr(study_id, key, value)


def _enqueue_defaults(study: optuna.Study, space: SearchSpace) -> None:
    """The default trial per position, unless already there (a takeover after a crash)."""
    present = {t.user_attrs.get("default") for t in study.get_trials(deepcopy=False)}
    for params in space.defaults():
        if params["position"] not in present:
            study.enqueue_trial(params, user_attrs={"default": params["position"], "attempt": 1})
