"""The study database: storage URLs, engines and the one Optuna RDB storage per URL (``storage``);
the queries and writes every other room makes on it (``db``); the one adapter for Optuna's private
parts (``adapter``); the typed records dkd-tune keeps in user attrs (``records``).

May import: nothing else of tuner (only the base modules tuner.errors, tuner.formats,
tuner.options).
"""
