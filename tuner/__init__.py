"""dkd-tune's service: Optuna studies of every kind on an RDB, the worker pool, the CLI, the views.

The science lives in ``objectives`` (which never imports this package); here it is run as a
tuning service. From Python::

    from tuner import TuneOptions, tune
    tune(TuneOptions(pairs="0-1,2-3", trials=30, workers=2))
"""

from tuner.errors import RunError, StorageError, UsageError
from tuner.kinds.pair import study_name
from tuner.options import TuneOptions, parse_devices, parse_pairs
from tuner.read.results import pair_rows
from tuner.run.start import join, plan, prepare
from tuner.run.tuning import tune
from tuner.search.space import SearchSpace, parse_space
from tuner.store.storage import check_storage, get_storage
from tuner.views.export import render
from tuner.views.tables import status_table

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
