"""What users look at: text tables (``tables``), exported winners (``export``), the dashboard
notes (``notes``), the HTML report (``report``: the page shell and writers; ``report_sections``,
``report_kinds``: its sections; ``html_parts``: the HTML helpers they share), the read-only
optuna-dashboard (``dashboard``) and ``terminal`` (stored text made safe to print).

May import: tuner.store, tuner.search, tuner.strategies, tuner.kinds, tuner.read.
"""
