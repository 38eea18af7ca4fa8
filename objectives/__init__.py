"""dkd-tune's science: data, partitions, models, divergences, the federation bundle, one-round KD.

A KD trial from Python, with no database::

    from objectives import load_config, prepare_federation, run_trial
    bundle = prepare_federation(load_config("fashion-mnist"))  # a shipped config, by name
    result = run_trial(bundle, student=0, teachers=[1], temperature=4.0, alpha=0.7)
    print(result.gain)

This package never imports the tuner or optuna; the tuner calls only what is exported here.

The names below are imported on first use (PEP 562): ``from objectives import DkdError`` (the
CLI's error type) or a config does not load torch; a trial does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Each public name and the module of this package that defines it.
_PUBLIC = {
    "AGGREGATIONS": "divergences",
    "DIVERGENCES": "divergences",
    "TOPOLOGIES": "topology",
    "TRANSFER_SETS": "trial",
    "ConfigError": "errors",
    "DataError": "errors",
    "Dataset": "data",
    "DkdError": "errors",
    "EvalPoint": "evaluation",
    "FederationBundle": "bundle",
    "FederationError": "errors",
    "KDRecipe": "config",
    "NonFiniteLoss": "errors",
    "ParticipantConfig": "config",
    "ParticipantError": "errors",
    "RoundResult": "neighbourhood",
    "StudyConfig": "config",
    "TrainRecipe": "config",
    "TrialError": "errors",
    "TrialResult": "trial",
    "TrialSpec": "trial",
    "apply_overrides": "config",
    "bundle_path": "bundle",
    "check_federation": "bundle",
    "get_divergence": "divergences",
    "kd_loss": "divergences",
    "load_bundle": "bundle",
    "load_config": "config",
    "load_dataset": "data",
    "neighbours": "topology",
    "parse_config": "config",
    "prepare_federation": "bundle",
    "run_federation_round": "neighbourhood",
    "run_neighbourhood_round": "neighbourhood",
    "run_trial": "trial",
    "train_neighbourhood_round": "neighbourhood",
}

if TYPE_CHECKING:
    from .bundle import (
        FederationBundle,
        bundle_path,
        check_federation,
        load_bundle,
        prepare_federation,
    )
    from .config import (
        KDRecipe,
        ParticipantConfig,
        StudyConfig,
        TrainRecipe,
        apply_overrides,
        load_config,
        parse_config,
    )
    from .data import Dataset, load_dataset
    from .divergences import AGGREGATIONS, DIVERGENCES, get_divergence, kd_loss
    from .errors import (
        ConfigError,
        DataError,
        DkdError,
        FederationError,
        NonFiniteLoss,
        ParticipantError,
        TrialError,
    )
    from .evaluation import EvalPoint
    from .neighbourhood import (
        RoundResult,
        run_federation_round,
        run_neighbourhood_round,
        train_neighbourhood_round,
    )
    from .topology import TOPOLOGIES, neighbours
    from .trial import TRANSFER_SETS, TrialResult, TrialSpec, run_trial


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'objectives' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"objectives.{module}"), name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__all__ = [
    "AGGREGATIONS",
    "DIVERGENCES",
    "TOPOLOGIES",
    "TRANSFER_SETS",
    "ConfigError",
    "DataError",
    "Dataset",
    "DkdError",
    "EvalPoint",
    "FederationBundle",
    "FederationError",
    "KDRecipe",
    "NonFiniteLoss",
    "ParticipantConfig",
    "ParticipantError",
    "RoundResult",
    "StudyConfig",
    "TrainRecipe",
    "TrialError",
    "TrialResult",
    "TrialSpec",
    "apply_overrides",
    "bundle_path",
    "check_federation",
    "get_divergence",
    "kd_loss",
    "load_bundle",
    "load_config",
    "load_dataset",
    "neighbours",
    "parse_config",
    "prepare_federation",
    "run_federation_round",
    "run_neighbourhood_round",
    "run_trial",
    "train_neighbourhood_round",
]
