"""Reading a stored run: per-pair results and the recommendation rule (``results``), the report's
figures gathered from the studies (``report_data``). Nothing here writes.

May import: tuner.store, tuner.search, tuner.strategies, tuner.kinds.
"""
