"""dkd-tune's science: data, partitions, models, divergences, the federation bundle, one-round KD.

A KD trial from Python, with no database::

    from objectives import load_config, prepare_federation, run_trial
    bundle = prepare_federation(load_config("fashion-mnist"))  # a shipped config, by name
    result = run_trial(bundle, student=0, teachers=[1], temperature=4.0, alpha=0.7)
    print(result.gain)

This package never imports the tuner or optuna; the tuner calls only what is exported here.
"""

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
from .trial import TRANSFER_SETS, TrialResult, run_trial

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
