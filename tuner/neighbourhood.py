"""``dkd-tune --mode neighbourhood``: one Optuna study per client over divergence, aggregation, T
and α, where a trial is that client's two-head round against all of its neighbours
(``objectives.run_neighbourhood_round``, the Molo et al. setting).

A client study is named ``<federation>/client-<k>`` and lives beside the pair studies: same
storage, budget, worker pool, pruning and retries (the pool runs :func:`run_client_trial` for
it). Its attrs record the client, its neighbours and the round's fixed transfer set, so a later
run with another graph or transfer set is refused instead of mixing incomparable trials. The
default trial (T = 1, α = 0.5, ``kl``, ``avg``) is enqueued first, once, as in the pair studies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.study import StudyDirection
from optuna.trial import TrialState

from objectives import (
    DkdError,
    EvalPoint,
    FederationBundle,
    KDRecipe,
    StudyConfig,
    run_neighbourhood_round,
)

from .budget import claim_is_within_budget, count_trials
from .errors import StorageError, UsageError
from .space import SearchSpace
from .storage import mask
from .studies import _wait_ready, config_record
from .trials import _RUNNING, HOST, LOST, Outcome, _fail, _give_back, beat_now

MODES = ("pair", "neighbourhood")
#: The default trial of a client study: the pair default, with the plain average of teachers.
CLIENT_DEFAULT: dict[str, Any] = {
    "temperature": 1.0,
    "alpha": 0.5,
    "divergence": "kl",
    "aggregation": "avg",
}
#: A client study's target, what the pool hands its trials: (client, *its neighbours).
ClientTarget = tuple[int, ...]


@dataclass(frozen=True)
class NeighbourhoodSpace:
    """The searched part of ``[search]`` for client studies, and the round's fixed transfer set
    (``[neighbourhood].transfer_set``: recorded, never sampled)."""

    temperature: tuple[float, float]
    alpha: tuple[float, float]
    divergence: tuple[str, ...]
    aggregation: tuple[str, ...]
    grid_temperature: tuple[float, ...]
    grid_alpha: tuple[float, ...]
    transfer_set: str = "local"

    @classmethod
    def from_search(cls, space: SearchSpace, transfer_set: str) -> NeighbourhoodSpace:
        return cls(
            space.temperature,
            space.alpha,
            space.divergence,
            space.aggregation,
            space.grid_temperature,
            space.grid_alpha,
            transfer_set,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: list(v) for k, v in asdict(self).items() if k != "transfer_set"}
        out["transfer_set"] = self.transfer_set
        return out

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "temperature": trial.suggest_float("temperature", *self.temperature, log=True),
            "alpha": trial.suggest_float("alpha", *self.alpha),
            "divergence": trial.suggest_categorical("divergence", list(self.divergence)),
            "aggregation": trial.suggest_categorical("aggregation", list(self.aggregation)),
        }

    def grid(self) -> dict[str, list]:
        return {
            "temperature": list(self.grid_temperature),
            "alpha": list(self.grid_alpha),
            "divergence": list(self.divergence),
            "aggregation": list(self.aggregation),
        }

    def defaults(self) -> list[dict[str, Any]]:
        return [dict(CLIENT_DEFAULT)]


def client_study_name(federation: str, client: int) -> str:
    return f"{federation}/client-{client}"


def check_two_heads(config: StudyConfig) -> None:
    """The neighbourhood round trains head 2; a one-head federation cannot run it."""
    model = config.model.name
    if not model.endswith("-2head"):
        raise UsageError(
            f"the neighbourhood mode needs a two-head model, {config.source} uses {model!r}: set "
            f'[model] name = "{model}-2head" (e.g. studies/fashion-mnist-n3.toml)'
        )


def parse_clients(spec: str, participants: int) -> list[int]:
    """``all`` or ``0,2``: sorted clients, each once, all in range."""
    if spec.strip() == "all":
        return list(range(participants))
    clients: set[int] = set()
    for item in spec.split(","):
        item = item.strip()
        if not item.isdigit():
            raise UsageError(
                f"bad --clients item {item!r}: write all or client numbers separated by commas, "
                "e.g. --clients 0,2"
            )
        if int(item) >= participants:
            raise UsageError(
                f"--clients {item}: client {item} does not exist, the federation has clients "
                f"0..{participants - 1}"
            )
        clients.add(int(item))
    return sorted(clients)


def targets(config: StudyConfig, clients: Sequence[int]) -> list[ClientTarget]:
    sets = config.neighbours
    return [(k, *sets[k]) for k in clients]


# --- studies ------------------------------------------------------------------------------------


def _expected(config: StudyConfig, space: NeighbourhoodSpace, target: ClientTarget) -> dict:
    return {
        "federation_hash": config.federation_hash,
        "kd_recipe": config_record(config)["kd"],
        "search": space.to_dict(),
        "neighbours": list(target[1:]),
    }


def _conflict(name: str, attrs: dict, want: dict, url: str) -> str | None:
    """Why this run cannot add trials to the existing client study ``name`` (None if it can)."""
    fix = f"use another --storage than {mask(url)} or another federation name (--set name=...)"
    if attrs.get("federation_hash") != want["federation_hash"]:
        return (
            f"study {name} holds federation hash {attrs.get('federation_hash')} but the config "
            f"gives {want['federation_hash']}: {fix}"
        )
    if attrs.get("neighbours") != want["neighbours"]:
        return (
            f"study {name} learned from neighbours {attrs.get('neighbours')}, the config's "
            f"[topology] gives {want['neighbours']}: {fix}"
        )
    if attrs.get("kd_recipe") != want["kd_recipe"]:
        return f"study {name} was run with another KD recipe ([kd]): {fix}"
    stored = attrs.get("search", {})
    for key in ("transfer_set", "divergence", "aggregation"):
        if stored.get(key) != want["search"][key]:
            return (
                f"study {name} was run with {key} = {stored.get(key)}, the config gives "
                f"{want['search'][key]}: {fix}"
            )
    return None


def check_existing_clients(
    storage: optuna.storages.RDBStorage,
    url: str,
    config: StudyConfig,
    space: NeighbourhoodSpace,
    client_targets: Sequence[ClientTarget],
) -> None:
    """Refuse (StorageError, nothing written) if an existing client study conflicts."""
    existing = {s.study_name: s for s in storage.get_all_studies()}
    for target in client_targets:
        name = client_study_name(config.name, target[0])
        if name not in existing:
            continue
        attrs = existing[name].user_attrs
        if not attrs.get("ready"):
            attrs = _wait_ready(storage, existing[name]._study_id) or attrs
        if "federation_hash" not in attrs:
            continue  # its creator died before writing attrs: setup takes over and checks
        reason = _conflict(name, attrs, _expected(config, space, target), url)
        if reason:
            raise StorageError(reason)


def setup_client_study(
    storage: optuna.storages.RDBStorage,
    url: str,
    config: StudyConfig,
    bundle: FederationBundle,
    space: NeighbourhoodSpace,
    target: ClientTarget,
) -> int:
    """Create (or join) the client's study; return its id once its default is enqueued (the same
    exactly-once protocol as ``studies.setup_study``: the creator writes ``ready`` last)."""
    client = target[0]
    name = client_study_name(config.name, client)
    try:
        study_id = storage.create_new_study([StudyDirection.MAXIMIZE], name)
        created = True
    except DuplicatedStudyError:
        study_id = storage.get_study_id_from_name(name)
        created = False
    attrs = None if created else _wait_ready(storage, study_id)
    if attrs is None:
        record = {
            "mode": "neighbourhood",
            "client": client,
            "federation": config.name,
            "accuracy": round(float(bundle.accuracy[client]), 4),
            "local_accuracy": round(float(bundle.local_accuracy[client]), 4),
            "topology": asdict(config.topology),
            "config": config_record(config),
            **_expected(config, space, target),
        }
        record["federation_hash"] = bundle.hash
        for key, value in record.items():
            storage.set_study_user_attr(study_id, key, value)
        study = optuna.load_study(study_name=name, storage=storage)
        present = {t.user_attrs.get("default") for t in study.get_trials(deepcopy=False)}
        for params in space.defaults():
            if params["aggregation"] not in present:
                attrs_ = {"default": params["aggregation"], "attempt": 1}
                study.enqueue_trial(params, user_attrs=attrs_)
        storage.set_study_user_attr(study_id, "ready", True)  # last: releases the waiters
        attrs = storage.get_study_user_attrs(study_id)
    reason = _conflict(name, attrs, _expected(config, space, target), url)
    if reason:
        raise StorageError(reason)
    return study_id


# --- one trial ----------------------------------------------------------------------------------


def run_client_trial(
    study: optuna.Study,
    bundle: FederationBundle,
    space: NeighbourhoodSpace,
    target: ClientTarget,
    *,
    budget: int,
    device: str,
    seed: int,
    retries: int,
    recipe: KDRecipe,
) -> Outcome:
    """Claim one trial of a client study and run it to COMPLETE, PRUNED or FAIL (the rules of
    ``trials.run_pair_trial``: budget claim, default never pruned, failures retried)."""
    trial = study.ask()
    if not claim_is_within_budget(study, trial._trial_id, budget):
        return _give_back(study, trial)
    _RUNNING[trial._trial_id] = (study, trial, retries)  # the heartbeat thread beats for it
    try:
        beat_now(study, trial._trial_id)
        return _run_claimed(study, trial, bundle, space, target, device, seed, retries, recipe)
    except (UpdateFinishedTrialError, ValueError) as exc:
        # Another worker's heartbeat check failed this trial while it ran (as in run_pair_trial).
        reason = str(study._storage.get_trial(trial._trial_id).user_attrs.get("fail_reason", ""))
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise exc.__context__ from None
        if not reason.startswith(LOST):
            raise
        return Outcome(trial.number, "lost", {}, reason=reason)
    finally:
        _RUNNING.pop(trial._trial_id, None)


def _run_claimed(
    study: optuna.Study,
    trial: optuna.Trial,
    bundle: FederationBundle,
    space: NeighbourhoodSpace,
    target: ClientTarget,
    device: str,
    seed: int,
    retries: int,
    recipe: KDRecipe,
) -> Outcome:
    fixed = trial.user_attrs
    params = space.suggest(trial)
    client, neighbours = target[0], list(target[1:])
    trial_seed = seed * 1_000_003 + trial.number  # distinct per trial, reproducible per study
    for key, value in {
        "client": client,
        "neighbours": neighbours,
        "transfer_set": space.transfer_set,
        "device": device,
        "worker_host": HOST,
        "worker_pid": os.getpid(),
        "seed": trial_seed,
        "attempt": int(fixed.get("attempt", 1)),
    }.items():
        trial.set_user_attr(key, value)
    is_default = "default" in fixed

    def on_eval(point: EvalPoint) -> None:
        trial.report(point.gain, point.index)
        if not point.final and not is_default and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at evaluation {point.index}/{point.points}")

    try:
        result = run_neighbourhood_round(
            bundle,
            client,
            neighbours,
            transfer_set=space.transfer_set,
            seed=trial_seed,
            device=device,
            on_eval=on_eval,
            recipe=recipe,
            **params,
        )
    except optuna.TrialPruned as exc:
        study.tell(trial, state=TrialState.PRUNED)
        return Outcome(trial.number, "pruned", params, reason=str(exc))
    except DkdError as exc:
        _fail(study, trial, str(exc), retries)
        return Outcome(trial.number, "failed", params, reason=str(exc))
    except BaseException as exc:
        _fail(study, trial, f"{exc.__class__.__name__}: {exc}", retries)
        raise
    if not math.isfinite(result.gain):
        _fail(study, trial, f"gain is {result.gain}", retries)
        return Outcome(trial.number, "failed", params, reason="non-finite gain")
    record = result.as_dict()
    for key in (
        "accuracy_before",
        "accuracy_after",
        "head1_accuracy_after",
        "local_accuracy_before",
        "local_accuracy_after",
        "forgetting",
        "seconds",
        "steps",
    ):
        trial.set_user_attr(key, record[key])
    study.tell(trial, result.gain)
    return Outcome(trial.number, "complete", params, result.gain, result.seconds)


# --- read back: status and export ---------------------------------------------------------------


def client_studies(
    storage: optuna.storages.RDBStorage, federation: str | None = None
) -> list[optuna.study.FrozenStudy]:
    """The neighbourhood client studies in the storage, sorted by federation and client."""
    studies = [
        s
        for s in storage.get_all_studies()
        if s.user_attrs.get("mode") == "neighbourhood"
        and "client" in s.user_attrs
        and (federation is None or s.user_attrs.get("federation") == federation)
    ]
    return sorted(studies, key=lambda s: (s.user_attrs["federation"], s.user_attrs["client"]))


def client_rows(storage: optuna.storages.RDBStorage, federation: str | None = None) -> list[dict]:
    """One dict per client study: counts, the best trial and the default's gain."""
    studies = client_studies(storage, federation)
    counts = count_trials(storage, [s._study_id for s in studies])
    rows = []
    for s in studies:
        trials = storage.get_all_trials(s._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        c = counts[s._study_id]
        default = next((t for t in trials if "default" in t.user_attrs), None)
        best = max(trials, key=lambda t: (t.value, -t.number), default=None)
        a = s.user_attrs
        rows.append(
            {
                "study": s.study_name,
                "mode": "neighbourhood",
                "federation": a["federation"],
                "federation_hash": a["federation_hash"],
                "client": a["client"],
                "neighbours": a["neighbours"],
                "round_transfer_set": a["search"]["transfer_set"],
                "finished": c.finished,
                "complete": c.complete,
                "pruned": c.pruned,
                "running": c.running,
                "failed": c.failed,
                "budget": a.get("run", {}).get("budget"),
                "accuracy_before": a.get("accuracy"),
                "trial": None if best is None else best.number,
                "best_params": None if best is None else dict(best.params),
                "best_gain": None if best is None else best.value,
                "best_accuracy": None if best is None else best.user_attrs.get("accuracy_after"),
                "default_gain": None if default is None else default.value,
                "improvement": None
                if best is None or default is None
                else best.value - default.value,
            }
        )
    return rows


def client_status_table(rows: list[dict]) -> str:
    """The client studies' lines of ``dkd-tune status`` (head 2's gain over the client's
    accuracy before KD)."""
    if not rows:
        return ""

    def gain(v: float | None) -> str:
        return "-" if v is None else f"{v:+.2f}"

    head = ("study", "neighbours", "finished", "failed", "pruned", "best", "default",
            "improvement", "best configuration")  # fmt: skip
    lines = [head]
    for r in rows:
        p = r["best_params"] or {}
        config = (
            f"T={p['temperature']:.3g} a={p['alpha']:.2f} {p['divergence']}/{p['aggregation']}"
            if p
            else "-"
        )
        budget = f"/{r['budget']}" if r["budget"] else ""
        lines.append(
            (
                r["study"],
                ",".join(map(str, r["neighbours"])),
                f"{r['finished']}{budget}",
                str(r["failed"]),
                str(r["pruned"]),
                gain(r["best_gain"]),
                gain(r["default_gain"]),
                gain(r["improvement"]),
                config,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i in (0, 1, 8) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    better = sum(1 for r in rows if r["improvement"] is not None and r["improvement"] > 0)
    text.append(
        f"neighbourhood mode: gain = head 2 after the round - the client's accuracy before KD; "
        f"tuning beats the default (T=1, a=0.5, kl/avg) for {better} of {len(rows)} clients"
    )
    return "\n".join(text) + "\n"


# --- the run ------------------------------------------------------------------------------------


def tune_neighbourhood(opts, say):
    """``dkd-tune --mode neighbourhood``: top every client study up to ``opts.trials`` finished
    trials. Everything that can be refused is checked before anything is written."""
    from objectives import load_config

    from .options import check_options, parse_devices
    from .pool import load_bundle_once
    from .run import Plan, _run
    from .space import parse_space
    from .storage import check_storage, get_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_options(opts)
    if opts.pairs != "all":
        raise UsageError(
            "--pairs is for --mode pair; with --mode neighbourhood pick clients with --clients"
        )
    config = load_config(opts.config, opts.overrides)
    check_two_heads(config)
    space = NeighbourhoodSpace.from_search(
        parse_space(config.search, config.source), config.neighbourhood.transfer_set
    )
    client_targets = targets(config, parse_clients(opts.clients, config.federation.participants))
    devices = parse_devices(opts.devices)
    check_storage(opts.storage)
    storage = get_storage(opts.storage)
    check_existing_clients(storage, opts.storage, config, space, client_targets)
    # Nothing was written up to here.
    say(
        f"federation {config.name} ({config.federation_hash}), neighbourhood mode "
        f"({config.topology.kind} graph, transfer set {space.transfer_set}), "
        f"{len(client_targets)} client(s), {opts.trials} trials each, storage {mask(opts.storage)}"
    )
    bundle = load_bundle_once(config, opts.bundles, devices[0], progress=say)
    from .budget import enqueue_missing_retries
    from .studies import record_run

    ids: dict[str, int] = {}
    for target in client_targets:
        name = client_study_name(config.name, target[0])
        ids[name] = sid = setup_client_study(storage, opts.storage, config, bundle, space, target)
        record_run(
            storage, sid, budget=opts.trials, sampler=opts.sampler, pruner=opts.pruner,
            seed=opts.seed, retries=opts.retries,
        )  # fmt: skip
        enqueue_missing_retries(optuna.load_study(study_name=name, storage=storage), opts.retries)
    plan = Plan(opts, config, space, client_targets, devices)  # type: ignore[arg-type]
    return _run(plan, opts, storage, ids, say)


def clients_body(rows: list[dict]) -> str:
    """The report's neighbourhood section: per client study the best and the default gain (head
    2 after the round minus the client's accuracy before KD) and the best configuration."""
    import plotly.graph_objects as go

    from .report import figure, table

    labels = [r["study"] for r in rows]
    fig = go.Figure(
        [
            go.Bar(name="default (T=1, a=0.5, kl/avg)", x=labels,
                   y=[r["default_gain"] for r in rows], marker_color="#8c8c8c"),
            go.Bar(name="best", x=labels, y=[r["best_gain"] for r in rows],
                   marker_color="#1f77b4"),
        ]
    )  # fmt: skip
    fig.update_layout(barmode="group", yaxis_title="gain of head 2 (pp)")

    def pp(v: float | None) -> str:
        return "-" if v is None else f"{v:+.2f}"

    lines = []
    for r in rows:
        p = r["best_params"] or {}
        best = (
            f"T={p['temperature']:.3g} a={p['alpha']:.2f} {p['divergence']}/{p['aggregation']}"
            if p
            else "-"
        )
        lines.append(
            (r["study"], ",".join(map(str, r["neighbours"])), r["finished"], pp(r["default_gain"]),
             pp(r["best_gain"]), pp(r["improvement"]), best)
        )  # fmt: skip
    head = ("study", "neighbours", "finished", "default", "best", "improvement", "best config")
    caption = (
        "Neighbourhood mode: each client's head 2 learns from all of its neighbours at once; "
        "gain = head-2 test accuracy after the round minus the client's accuracy before KD."
    )
    return figure(fig, "neighbourhood", caption) + table(head, lines)
