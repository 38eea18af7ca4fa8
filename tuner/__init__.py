"""dkd-tune's service: Optuna studies of every kind on an RDB, the worker pool, the CLI, the views.

The science lives in ``objectives`` (which never imports this package); here it is run as a
tuning service. From Python::

    from tuner import TuneOptions, tune
    tune(TuneOptions(pairs="0-1,2-3", trials=30, workers=2))
"""

from .errors import RunError, StorageError, UsageError
from .export import render
from .kinds.pair import study_name
from .options import TuneOptions, parse_devices, parse_pairs
from .results import pair_rows
from .run import join, plan, prepare
from .space import SearchSpace, parse_space
from .storage import check_storage, get_storage
from .tables import status_table
from .tuning import tune

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
