"""``dkd-tune compare``: the Molo et al. poster's full factorial on a two-head federation.

Every divergence × aggregation at the config's ``[compare]`` T and α, ``seeds`` times, on one
federation per ``[compare].partitions`` entry (the config's federation with only the partition
changed: iid and Dirichlet 0.5 by default). One cell run is one round of the whole federation:
every client's neighbourhood round (objectives.run_federation_round), clients one after another.
Its value is the clients' mean head-2 accuracy; it also records each client's accuracies and the
round's seconds. Seeds are shared across cells (the same fresh head 2 and batch order for every
divergence and aggregation), so cells differ only by what they compare.

Stored as one Optuna study per federation, ``<federation>/compare``, one COMPLETE trial per cell
and seed: a rerun runs only the missing ones, and an interrupted run keeps what it finished.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.study import StudyDirection

from objectives import (
    AGGREGATIONS,
    DIVERGENCES,
    StudyConfig,
    load_config,
    parse_config,
    run_federation_round,
)
from objectives.config import parse_partition

from .errors import StorageError, UsageError
from .neighbourhood import check_two_heads
from .storage import check_storage, get_storage, mask
from .studies import config_record

Say = Callable[[str], None]
#: Seeds are a trial parameter; this bounds its (fixed) distribution, not how many run.
MAX_SEEDS = 1000


@dataclass
class CompareOptions:
    """One ``dkd-tune compare``; ``seeds``/``partitions`` None take the config's ``[compare]``."""

    config: str = "studies/fashion-mnist-n3.toml"
    storage: str = "sqlite:///dkd-tune.db"
    overrides: list[str] = field(default_factory=list)
    bundles: str | None = None
    devices: str = "auto"
    seeds: int | None = None
    partitions: str | None = None  # e.g. "iid,dirichlet:0.5"


@dataclass(frozen=True)
class Cell:
    """One row of the table for one federation: a divergence × aggregation over its seeds."""

    federation: str
    partition: str
    divergence: str
    aggregation: str
    accuracies: tuple[float, ...]  # per seed: the clients' mean head-2 accuracy, %
    gains: tuple[float, ...]  # per seed: the clients' mean gain, pp
    seconds: tuple[float, ...]  # per seed: seconds of the whole round (every client)

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def accuracy(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def accuracy_std(self) -> float | None:
        return statistics.stdev(self.accuracies) if self.n > 1 else None

    @property
    def gain(self) -> float | None:
        return statistics.fmean(self.gains) if self.gains else None

    @property
    def seconds_per_round(self) -> float | None:
        return statistics.fmean(self.seconds) if self.seconds else None


def compare_study_name(federation: str) -> str:
    return f"{federation}/compare"


def partition_label(partition: str) -> str:
    """A federation-name-safe form of a partition spec: ``dirichlet:0.5`` → ``dirichlet0.5``."""
    return partition.replace(":", "")


def federations(config: StudyConfig, partitions: Sequence[str]) -> list[StudyConfig]:
    """One config per partition: the given one where the partition is its own (its bundle is
    reused), else a copy named ``<name>-<partition>`` with only the partition changed."""
    out = []
    for spec in partitions:
        if spec == config.federation.partition:
            out.append(config)
            continue
        raw = config_record(config)
        raw["federation"]["partition"] = spec
        raw["name"] = f"{config.name}-{partition_label(spec)}"
        out.append(parse_config(raw, source=f"{config.source} ({spec})"))
    return out


def _partitions(opts: CompareOptions, config: StudyConfig) -> list[str]:
    if opts.partitions is None:
        return list(config.compare.partitions)
    specs = [s.strip() for s in opts.partitions.split(",") if s.strip()]
    if not specs:
        raise UsageError("--partitions is empty: write e.g. --partitions iid,dirichlet:0.5")
    for s in specs:
        parse_partition(s)
    if len(set(specs)) != len(specs):
        raise UsageError(f"--partitions lists a partition twice: {opts.partitions}")
    return specs


def _seeds(opts: CompareOptions, config: StudyConfig) -> int:
    seeds = config.compare.seeds if opts.seeds is None else opts.seeds
    if not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise UsageError(f"--seeds {seeds} must be a whole number in 1..{MAX_SEEDS}, e.g. 3")
    return seeds


def _settings(config: StudyConfig) -> dict[str, Any]:
    """What every trial of a compare study must share (checked on a rerun)."""
    return {
        "federation_hash": config.federation_hash,
        "kd_recipe": config_record(config)["kd"],
        "temperature": config.compare.temperature,
        "alpha": config.compare.alpha,
        "transfer_set": config.neighbourhood.transfer_set,
        "neighbours": [list(s) for s in config.neighbours],
    }


def _check_existing(storage: optuna.storages.RDBStorage, url: str, config: StudyConfig) -> None:
    name = compare_study_name(config.name)
    existing = {s.study_name: s for s in storage.get_all_studies()}
    if name not in existing:
        return
    stored = existing[name].user_attrs
    for key, want in _settings(config).items():
        if stored.get(key) != want:
            raise StorageError(
                f"study {name} was run with {key} = {stored.get(key)}, the config gives {want}: "
                f"use another --storage than {mask(url)} or another name (--set name=...)"
            )


_DISTRIBUTIONS = {
    "divergence": CategoricalDistribution(list(DIVERGENCES)),
    "aggregation": CategoricalDistribution(list(AGGREGATIONS)),
    "seed": IntDistribution(0, MAX_SEEDS - 1),
}


def _study(storage: optuna.storages.RDBStorage, config: StudyConfig, bundle) -> optuna.Study:
    name = compare_study_name(config.name)
    study = optuna.create_study(
        storage=storage, study_name=name, direction=StudyDirection.MAXIMIZE, load_if_exists=True
    )
    if "federation_hash" not in study.user_attrs:
        attrs = {
            "mode": "compare",
            "federation": config.name,
            "partition": config.federation.partition,
            "accuracy_before": [round(float(a), 4) for a in bundle.accuracy],
            "config": config_record(config),
            **_settings(config),
        }
        for key, value in attrs.items():
            study.set_user_attr(key, value)
    return study


def _done(study: optuna.Study) -> set[tuple[str, str, int]]:
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return {(t.params["divergence"], t.params["aggregation"], t.params["seed"]) for t in trials}


def run_compare(opts: CompareOptions, say: Say = print) -> list[Cell]:
    """Run every missing cell × seed of every federation; return the table's cells."""
    from .options import parse_devices
    from .pool import load_bundle_once

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_config(opts.config, opts.overrides)
    check_two_heads(base)
    seeds = _seeds(opts, base)
    configs = federations(base, _partitions(opts, base))
    device = parse_devices(opts.devices)[0]
    check_storage(opts.storage)
    storage = get_storage(opts.storage)
    for config in configs:
        _check_existing(storage, opts.storage, config)
    # Nothing was written up to here.
    c = base.compare
    total = len(configs) * len(DIVERGENCES) * len(AGGREGATIONS) * seeds
    say(
        f"compare: {len(DIVERGENCES)} divergences x {len(AGGREGATIONS)} aggregations x {seeds} "
        f"seed(s) on {len(configs)} federation(s), T={c.temperature:g}, alpha={c.alpha:g}, "
        f"transfer set {base.neighbourhood.transfer_set}, {base.topology.kind} graph, "
        f"storage {mask(opts.storage)}"
    )
    run = 0
    for config in configs:
        bundle = load_bundle_once(config, opts.bundles, device, progress=say)
        study = _study(storage, config, bundle)
        done = _done(study)
        for seed in range(seeds):  # seed-major: an interrupted run has whole seeds
            for divergence in DIVERGENCES:
                for aggregation in AGGREGATIONS:
                    run += 1
                    if (divergence, aggregation, seed) in done:
                        continue
                    started = time.perf_counter()
                    results = run_federation_round(
                        bundle,
                        config.neighbours,
                        temperature=c.temperature,
                        alpha=c.alpha,
                        divergence=divergence,
                        aggregation=aggregation,
                        transfer_set=config.neighbourhood.transfer_set,
                        seed=seed,
                        device=device,
                        recipe=config.kd,
                    )
                    seconds = time.perf_counter() - started
                    accuracy = statistics.fmean(r.accuracy_after for r in results)
                    study.add_trial(
                        optuna.trial.create_trial(
                            params={
                                "divergence": divergence,
                                "aggregation": aggregation,
                                "seed": seed,
                            },
                            distributions=_DISTRIBUTIONS,
                            value=accuracy,
                            user_attrs={
                                "gain": statistics.fmean(r.gain for r in results),
                                "seconds": seconds,
                                "clients": [asdict(r) for r in results],
                                "device": str(device),
                            },
                        )
                    )
                    say(
                        f"[{run}/{total}] {config.name} {divergence}/{aggregation} seed {seed}: "
                        f"accuracy {accuracy:.2f}% ({seconds:.1f}s)"
                    )
    return read_cells(storage, [cfg.name for cfg in configs])


def read_cells(
    storage: optuna.storages.RDBStorage, names: Sequence[str] | None = None
) -> list[Cell]:
    """The table's cells from the stored compare studies (all of them, or these federations)."""
    studies = [s for s in storage.get_all_studies() if s.user_attrs.get("mode") == "compare"]
    if names is not None:
        order = {n: i for i, n in enumerate(names)}
        studies = sorted(
            (s for s in studies if s.user_attrs["federation"] in order),
            key=lambda s: order[s.user_attrs["federation"]],
        )
    cells = []
    for s in studies:
        trials = storage.get_all_trials(
            s._study_id, deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        )
        for divergence in DIVERGENCES:
            for aggregation in AGGREGATIONS:
                mine = sorted(
                    (
                        t
                        for t in trials
                        if t.params["divergence"] == divergence
                        and t.params["aggregation"] == aggregation
                    ),
                    key=lambda t: t.params["seed"],
                )
                cells.append(
                    Cell(
                        federation=s.user_attrs["federation"],
                        partition=s.user_attrs["partition"],
                        divergence=divergence,
                        aggregation=aggregation,
                        accuracies=tuple(t.value for t in mine),
                        gains=tuple(t.user_attrs["gain"] for t in mine),
                        seconds=tuple(t.user_attrs["seconds"] for t in mine),
                    )
                )
    return cells


def _mean_std(cell: Cell) -> str:
    if cell.accuracy is None:
        return "-"
    std = cell.accuracy_std
    return f"{cell.accuracy:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def table(cells: Sequence[Cell]) -> str:
    """The comparison as text: a row per divergence × aggregation, for each federation its
    accuracy (mean ± std over seeds, %) and seconds per round."""
    if not cells:
        return "no compare studies in this storage: run dkd-tune compare first\n"
    feds = list(dict.fromkeys((c.federation, c.partition) for c in cells))
    by = {(c.federation, c.divergence, c.aggregation): c for c in cells}
    head = ["divergence", "aggregation"]
    for _, partition in feds:
        head += [f"{partition} accuracy (%)", "s/round"]
    lines = [head]
    for divergence in DIVERGENCES:
        for aggregation in AGGREGATIONS:
            row = [divergence, aggregation]
            for fed, _ in feds:
                cell = by.get((fed, divergence, aggregation))
                row.append("-" if cell is None else _mean_std(cell))
                s = None if cell is None else cell.seconds_per_round
                row.append("-" if s is None else f"{s:.1f}")
            lines.append(row)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    seeds = sorted({c.n for c in cells})
    text.append(
        f"accuracy: head 2 after one round, mean over the clients, then mean ± std over "
        f"{'/'.join(map(str, seeds))} seed(s); s/round: every client's round, one after another"
    )
    for fed, partition in feds:
        best = max(
            (c for c in cells if c.federation == fed and c.accuracy is not None),
            key=lambda c: c.accuracy,
            default=None,
        )
        spread = [c.accuracy for c in cells if c.federation == fed and c.accuracy is not None]
        if best is not None and spread:
            text.append(
                f"{partition} ({fed}): best {best.divergence}/{best.aggregation} "
                f"{best.accuracy:.2f}%, spread over cells {max(spread) - min(spread):.2f} pp"
            )
    return "\n".join(text) + "\n"


def summary(cells: Sequence[Cell]) -> dict[str, dict[str, Any]]:
    """Per federation: the spread over divergences, the mean per aggregation (accuracy and
    seconds), the divergence ranking: the numbers the poster's conclusions are about."""
    out: dict[str, dict[str, Any]] = {}
    for fed in dict.fromkeys(c.federation for c in cells):
        mine = [c for c in cells if c.federation == fed and c.accuracy is not None]
        if not mine:
            continue
        per_div = {
            d: statistics.fmean(c.accuracy for c in mine if c.divergence == d)
            for d in DIVERGENCES
            if any(c.divergence == d for c in mine)
        }
        per_agg = {
            a: {
                "accuracy": statistics.fmean(c.accuracy for c in mine if c.aggregation == a),
                "seconds": statistics.fmean(
                    c.seconds_per_round for c in mine if c.aggregation == a
                ),
            }
            for a in AGGREGATIONS
            if any(c.aggregation == a for c in mine)
        }
        stds = [c.accuracy_std for c in mine if c.accuracy_std is not None]
        out[fed] = {
            "partition": mine[0].partition,
            "divergence_ranking": sorted(per_div, key=per_div.get, reverse=True),
            "per_divergence": per_div,
            "per_aggregation": per_agg,
            "divergence_spread": max(per_div.values()) - min(per_div.values()),
            "mean_seed_std": statistics.fmean(stds) if stds else math.nan,
        }
    return out


# --- the report -------------------------------------------------------------------------------


def compare_body(cells: Sequence[Cell]) -> str:
    """The report's compare section: accuracy (mean ± std over seeds) per divergence and
    aggregation for each federation, accuracy against seconds per round, and the table."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .report import figure
    from .report import table as html_table

    feds = list(dict.fromkeys((c.federation, c.partition) for c in cells))
    by = {(c.federation, c.divergence, c.aggregation): c for c in cells}
    colours = {"avg": "#1f77b4", "sum": "#ff7f0e"}
    bars = make_subplots(
        rows=1, cols=len(feds), subplot_titles=[f"{p} ({f})" for f, p in feds], shared_yaxes=True
    )
    trade = go.Figure()
    for col, (fed, partition) in enumerate(feds, start=1):
        for agg in AGGREGATIONS:
            row = [by.get((fed, d, agg)) for d in DIVERGENCES]
            bars.add_trace(
                go.Bar(
                    name=agg,
                    x=list(DIVERGENCES),
                    y=[None if c is None else c.accuracy for c in row],
                    error_y={"array": [0 if c is None else c.accuracy_std or 0 for c in row]},
                    marker_color=colours[agg],
                    showlegend=col == 1,
                    legendgroup=agg,
                ),
                row=1,
                col=col,
            )
            done = [c for c in row if c is not None and c.accuracy is not None]
            trade.add_trace(
                go.Scatter(
                    name=f"{partition} {agg}",
                    x=[c.seconds_per_round for c in done],
                    y=[c.accuracy for c in done],
                    text=[c.divergence for c in done],
                    mode="markers+text",
                    textposition="top center",
                    marker={
                        "color": colours[agg],
                        "symbol": "circle" if col == 1 else "diamond",
                        "size": 10,
                    },
                )
            )
    spread = [c.accuracy for c in cells if c.accuracy is not None]
    if spread:
        pad = max(0.5, (max(spread) - min(spread)) * 0.5)
        bars.update_yaxes(range=[min(spread) - pad, max(spread) + pad])
    bars.update_layout(barmode="group", yaxis_title="head-2 accuracy (%)")
    trade.update_layout(xaxis_title="seconds per round", yaxis_title="head-2 accuracy (%)")
    seeds = "/".join(map(str, sorted({c.n for c in cells})))
    rows = []
    for d in DIVERGENCES:
        for agg in AGGREGATIONS:
            line: list[object] = [d, agg]
            for fed, _ in feds:
                c = by.get((fed, d, agg))
                s = None if c is None else c.seconds_per_round
                line += ["-" if c is None else _mean_std(c), "-" if s is None else f"{s:.1f}"]
            rows.append(line)
    head = ["divergence", "aggregation"]
    for _, partition in feds:
        head += [f"{partition} accuracy (%)", "s/round"]
    return (
        figure(
            bars,
            "compare-accuracy",
            f"Head-2 test accuracy after one neighbourhood round, mean over the clients, mean ± "
            f"std over {seeds} seed(s), per divergence and aggregation (avg: one divergence to "
            "the mean of the neighbours' predictions; sum: one per neighbour).",
        )
        + figure(
            trade,
            "compare-tradeoff",
            "Accuracy against the seconds a round of every client takes (the accuracy / "
            "efficiency trade-off of the two aggregations).",
        )
        + html_table(head, rows)
    )


def write_page(url: str, out: str) -> list[Cell]:
    """``dkd-tune compare --report FILE``: a self-contained page with the compare section."""
    import html
    import os
    import tempfile

    import plotly.offline

    from .report import _CSS

    cells = read_cells(get_storage(url))
    if not cells:
        raise UsageError(f"no compare studies in {mask(url)}: run dkd-tune compare first")
    title = "dkd-tune compare: divergence x aggregation"
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f"<h1>{title}</h1><p>Storage {html.escape(mask(url))}.</p>"
        f'<section id="compare">{compare_body(cells)}</section></body></html>'
    )
    folder = os.path.dirname(out) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".compare.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)  # never half a page
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise UsageError(
            f"cannot write --report {out} ({exc.strerror or exc}): pick a writable path"
        ) from None
    return cells
