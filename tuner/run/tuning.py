"""``dkd-tune``: a tuning run — the pair (or client) studies topped up to ``--trials``, then each
pair's candidates confirmed with fresh seeds (``--confirm K``), from which the recommendation per
pair is read (tuner.read.results)."""

from __future__ import annotations

from collections.abc import Sequence

from objectives import load_config
from tuner.kinds import TUNED, own_configs
from tuner.options import TuneOptions
from tuner.run.confirm import confirm_in_run, join_confirmation
from tuner.run.start import RunSummary, Say, join, phases, plan, start
from tuner.store.db import quiet_optuna
from tuner.store.storage import mask
from tuner.strategies import strategy


def tune(opts: TuneOptions, say: Say = print) -> RunSummary:
    """Run a tuning: top every pair (or client) study up to ``opts.trials`` finished trials."""
    quiet_optuna()
    config, tasks, devices = plan(opts)
    what = TUNED[opts.mode].run_what(config)
    with own_configs(config):  # its studies are rebuilt from this file, never from storage
        summary = start(
            opts, tasks, devices, say,
            f"federation {config.name} ({config.federation_hash}), {len(tasks)} {what}, "
            f"{_budget(opts)}, storage {mask(opts.storage)}",
        )  # fmt: skip
        if len(phases(opts)) > 1:  # a second phase: the mode's studies confirmed
            confirm_in_run(opts, list(summary.studies), devices, say)
    return summary


def _budget(opts: TuneOptions) -> str:
    """What ``--trials`` means for this run's studies (a kind that is not raced: the unnamed
    strategy's rule, tuner.strategies)."""
    return strategy(opts.strategy if TUNED[opts.mode].races else None).budget(opts.trials)


def join_run(
    opts: TuneOptions, federation: str | None, say: Say = print, *, own: Sequence[str] = ()
) -> RunSummary:
    """``dkd-tune worker``: serve the run recorded in the storage to its end, phase by phase as
    the process that started it does: its studies, then (a pair run with ``--confirm K``) the
    confirmation of its pairs."""
    # The worker's own config file, if given, is where the studies' participants come from
    # (their models may be code); without one, only stored built-in models are used.
    mine = load_config(opts.config, opts.overrides) if "config" in own else None
    with own_configs(mine):
        summary = join(opts, federation, say, own=own)
        confirmed = join_confirmation(summary.opts or opts, list(summary.studies), say)
    if confirmed is not None:
        summary.reports += confirmed.reports
        summary.finished += confirmed.finished
        summary.seconds += confirmed.seconds
    return summary
