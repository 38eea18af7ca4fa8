"""Reading a stored run: per-pair results (``results``), a pair's answer and the recommendation
rule (``answer``, its statistics in ``decision``), the report's figures gathered from the studies
(``report_data``). Nothing here writes.

May import: tuner.store, tuner.search, tuner.strategies, tuner.kinds.
"""
