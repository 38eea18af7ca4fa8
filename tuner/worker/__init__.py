"""Serving trials: the worker pool and its processes (``pool``, ``process``), one trial's life
from claim to tell (``lifecycle``), the budget and retries (``budget``), heartbeats that fail a
dead worker's trials (``heartbeat``), what every worker of a run must share (``fleet``), and
Ctrl-C that lands where Python would drop it (``interrupts``).

May import: tuner.store, tuner.search, tuner.strategies, tuner.kinds.
"""
