"""dkd-tune's service: Optuna studies of every kind on an RDB, the worker pool, the CLI, the views.

The science lives in ``objectives`` (which never imports this package); here it is run as a
tuning service. From Python::

    from tuner import TuneOptions, tune
    tune(TuneOptions(pairs="0-1,2-3", trials=30, workers=2))

The rooms (each package's docstring says what lives there and what it may import; the layers
are tested in tests/test_layers.py): ``store`` (the database), ``search`` (space, best, warm
start), ``kinds`` (study kinds and their set-up), ``worker`` (pool, processes, one trial's
lifecycle), ``read`` (results), ``views`` (tables, export, notes, report, dashboard), ``run``
(a run start to end), ``cli``; base modules every room may import: ``errors``, ``formats``,
``options``.

The names below are imported on first use (PEP 562), so that a worker process or ``dkd-tune
--help``, which import one room, do not pay for all of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Each public name and the module that defines it.
_PUBLIC = {
    "RunError": "tuner.errors",
    "StorageError": "tuner.errors",
    "UsageError": "tuner.errors",
    "TuneOptions": "tuner.options",
    "parse_devices": "tuner.options",
    "parse_pairs": "tuner.options",
    "SearchSpace": "tuner.search.space",
    "parse_space": "tuner.search.space",
    "check_storage": "tuner.store.storage",
    "get_storage": "tuner.store.storage",
    "study_name": "tuner.kinds.pair",
    "pair_rows": "tuner.read.results",
    "join": "tuner.run.start",
    "plan": "tuner.run.start",
    "prepare": "tuner.run.start",
    "tune": "tuner.run.tuning",
    "render": "tuner.views.export",
    "status_table": "tuner.views.tables",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


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
