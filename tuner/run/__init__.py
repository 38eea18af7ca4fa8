"""A run from start to end: check, set up and serve (``start``), pair and client tuning and a
worker joining a stored run (``tuning``), the confirmation on fresh seeds (``confirm``), the
compare grid (``compare``), which flags each phase uses (``applies``) and the progress display
(``progress``).

May import: tuner.store, tuner.search, tuner.strategies, tuner.kinds, tuner.worker, tuner.read,
tuner.views.
"""
