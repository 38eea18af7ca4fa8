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

What lives where (each module imports only those above it; this package re-exports them all):

- :mod:`.schema`: the section dataclasses (DataConfig, FederationConfig, ModelConfig,
  ParticipantConfig, TrainRecipe, KDRecipe, TopologyConfig, NeighbourhoodConfig,
  CompareConfig), the names they accept (DATASETS, MODELS, ...) and the value checks and parsers
  their fields carry (parse_partition, parse_partitions, partition_file, is_user_dataset).
- :mod:`.hashing`: the federation hash, what keys a federation bundle (BUNDLE_FORMAT,
  federation_key, federation_hash, participant_key) and the file digests it covers.
- :mod:`.study`: StudyConfig, the whole config; its ``federation_hash`` comes from the above.
- :mod:`.parsing`: nested dicts to a StudyConfig (parse_config, suggest, apply_overrides).
- :mod:`.loading`: files and shipped configs (STUDIES_DIR, DEFAULT_STUDY, shipped_configs,
  config_path, load_config).
"""

from .hashing import BUNDLE_FORMAT, pair_change
from .loading import DEFAULT_STUDY, STUDIES_DIR, config_path, load_config, shipped_configs
from .parsing import apply_overrides, parse_config, suggest
from .schema import (
    AUGMENTATIONS,
    DATASETS,
    MODELS,
    NEIGHBOURHOOD_TRANSFER_SETS,
    OPTIMIZERS,
    PARTITION_FILE_PREFIX,
    SCHEDULES,
    TORCHVISION_PREFIX,
    USER_DATASETS,
    CompareConfig,
    DataConfig,
    FederationConfig,
    KDRecipe,
    ModelConfig,
    NeighbourhoodConfig,
    ParticipantConfig,
    TopologyConfig,
    TrainRecipe,
    is_user_dataset,
    parse_partition,
    parse_partitions,
    partition_file,
)
from .study import StudyConfig

__all__ = [
    "AUGMENTATIONS",
    "BUNDLE_FORMAT",
    "DATASETS",
    "DEFAULT_STUDY",
    "MODELS",
    "NEIGHBOURHOOD_TRANSFER_SETS",
    "OPTIMIZERS",
    "PARTITION_FILE_PREFIX",
    "SCHEDULES",
    "STUDIES_DIR",
    "TORCHVISION_PREFIX",
    "USER_DATASETS",
    "CompareConfig",
    "DataConfig",
    "FederationConfig",
    "KDRecipe",
    "ModelConfig",
    "NeighbourhoodConfig",
    "ParticipantConfig",
    "StudyConfig",
    "TopologyConfig",
    "TrainRecipe",
    "apply_overrides",
    "config_path",
    "is_user_dataset",
    "load_config",
    "pair_change",
    "parse_config",
    "parse_partition",
    "parse_partitions",
    "partition_file",
    "shipped_configs",
    "suggest",
]
