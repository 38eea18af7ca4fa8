"""What a pair study searches and how its best is chosen: the search space (``space``), the
single-trial best and default rule (``best``), the warm start from neighbouring pairs (``warm``).

May import: tuner.store (the Optuna adapter).
"""
