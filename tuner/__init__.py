"""dkd-tune's service: per-pair Optuna studies on an RDB, the worker pool, the CLI and export.

The science lives in ``objectives`` (which never imports this package); here it is run as a
tuning service. From Python::

    from tuner import TuneOptions, tune
    tune(TuneOptions(pairs="0-1,2-3", trials=30, workers=2))
"""

from .errors import RunError, StorageError, UsageError
from .export import pair_rows, render, status_table
from .options import TuneOptions, parse_devices, parse_pairs
from .run import join, plan, prepare, tune
from .space import SearchSpace, parse_space
from .storage import check_storage, get_storage
from .studies import study_name

__all__ = [
    "RunError",
    "SearchSpace",
    "StorageError",
    "TuneOptions",
    "UsageError",
    "check_storage",
    "get_storage",
    "join",
    "pair_rows",
    "parse_devices",
    "parse_pairs",
    "parse_space",
    "plan",
    "prepare",
    "render",
    "status_table",
    "study_name",
    "tune",
]
