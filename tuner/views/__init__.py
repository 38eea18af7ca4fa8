"""What users look at: text tables (``tables``), exported winners (``export``), the dashboard
notes (``notes``), the HTML report (``report``: page shell, ``report_sections``: its sections)
and the read-only optuna-dashboard (``dashboard``).

May import: tuner.store, tuner.search, tuner.kinds, tuner.read.
"""
