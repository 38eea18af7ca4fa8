"""``dkd-tune confirm``: re-run each pair's best and default configurations with fresh seeds.

The best of a study is the maximum of many single noisy trials, so its gain is biased upwards;
re-running it and the same-student default with k seeds no trial used gives means and standard
deviations to compare them by (and the noise estimate of ``report_data``). Best and default share
the seeds, so seed-to-seed variation affects both alike. The result is stored in the pair study's
user attr ``confirm``; rerunning with the same seeds reproduces it, and a pair already confirmed for
its current best with at least k seeds is skipped.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives import DkdError, FederationBundle, StudyConfig, parse_config, run_trial

from .errors import StorageError, UsageError
from .export import pair_studies
from .options import parse_devices, parse_pairs
from .pool import load_bundle_once
from .report_data import CONFIRM_ATTR, sample_std
from .storage import check_storage, get_storage, mask

Say = Callable[[str], None]
#: First confirm seed; far above the tuning trials' seeds (seed * 1_000_003 + trial number).
CONFIRM_SEED_BASE = 2_000_000_011


@dataclass
class ConfirmOutcome:
    """What confirm did for one pair study."""

    study: str
    state: str  # confirmed | skipped | failed
    reason: str = ""
    record: dict[str, Any] | None = None


def fresh_seeds(trials: Sequence[FrozenTrial], k: int) -> list[int]:
    """The first k seeds from CONFIRM_SEED_BASE that no trial of the study ran with."""
    used = {t.user_attrs.get("seed") for t in trials}
    seeds, s = [], CONFIRM_SEED_BASE
    while len(seeds) < k:
        if s not in used:
            seeds.append(s)
        s += 1
    return seeds


def _runs(
    bundle: FederationBundle,
    config: StudyConfig,
    student: int,
    teacher: int,
    params: dict[str, Any],
    seeds: Sequence[int],
    device: str,
) -> dict[str, Any]:
    """One configuration over the seeds: per-seed gain, accuracy and forgetting, mean and std."""
    out: dict[str, list[float]] = {"gain": [], "accuracy_after": [], "forgetting": []}
    for seed in seeds:
        result = run_trial(
            bundle,
            student,
            [teacher],
            temperature=params["temperature"],
            alpha=params["alpha"],
            divergence=params["divergence"],
            transfer_set=params["transfer_set"],
            aggregation=params.get("aggregation", "avg"),
            seed=seed,
            device=device,
            recipe=config.kd,
        )
        out["gain"].append(result.gain)
        out["accuracy_after"].append(result.accuracy_after)
        out["forgetting"].append(result.forgetting)
    return {
        "params": dict(params),
        **out,
        "gain_mean": statistics.fmean(out["gain"]),
        "gain_std": sample_std(out["gain"]),
    }


def confirm_pair(
    study: optuna.study.FrozenStudy,
    trials: Sequence[FrozenTrial],
    bundle: FederationBundle,
    config: StudyConfig,
    repeats: int,
    device: str,
    force: bool = False,
) -> ConfirmOutcome:
    """Run (or skip) one pair's confirmation; return the record to store (not stored here)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(done, key=lambda t: (t.value, -t.number), default=None)
    if best is None:
        return ConfirmOutcome(study.study_name, "skipped", "no complete trial yet")
    position = best.params["position"]
    default = next((t for t in done if t.user_attrs.get("default") == position), None)
    if default is None:
        return ConfirmOutcome(
            study.study_name, "skipped", f"no default trial for position {position}"
        )
    old = study.user_attrs.get(CONFIRM_ATTR)
    if (
        not force
        and old
        and old["best"]["trial"] == best.number
        and old["default"]["trial"] == default.number
        and old["repeats"] >= repeats
    ):
        return ConfirmOutcome(
            study.study_name, "skipped", f"already confirmed ({old['repeats']} seeds)"
        )
    a, b = study.user_attrs["pair"]
    student, teacher = (a, b) if position == "a" else (b, a)
    seeds = fresh_seeds(trials, repeats)
    started = time.perf_counter()
    try:
        best_runs = _runs(bundle, config, student, teacher, best.params, seeds, device)
        # The best may be the default trial itself: same configuration, same seeds, same runs.
        default_runs = (
            best_runs
            if best.number == default.number
            else _runs(bundle, config, student, teacher, default.params, seeds, device)
        )
    except DkdError as exc:  # e.g. a NaN loss under one of the new seeds
        return ConfirmOutcome(study.study_name, "failed", str(exc))
    record = {
        "repeats": repeats,
        "seeds": seeds,
        "position": position,
        "student": student,
        "teacher": teacher,
        "device": device,
        "seconds": round(time.perf_counter() - started, 2),
        "best": {"trial": best.number, **best_runs},
        "default": {"trial": default.number, **default_runs},
    }
    return ConfirmOutcome(study.study_name, "confirmed", record=record)


def _federation_config(studies: Sequence[optuna.study.FrozenStudy]) -> StudyConfig:
    """The config the studies were tuned with (stored in them), checked against their hash."""
    first = studies[0]
    config = parse_config(first.user_attrs["config"], source=f"study {first.study_name}")
    if config.federation_hash != first.user_attrs["federation_hash"]:
        raise StorageError(
            f"study {first.study_name} holds a config whose hash {config.federation_hash} is not "
            f"its federation hash {first.user_attrs['federation_hash']}: it was written by another "
            "dkd-tune version; rerun the tuning in a new storage"
        )
    return config


def confirm(
    url: str,
    *,
    repeats: int = 3,
    federation: str | None = None,
    pairs: str = "all",
    devices: str = "auto",
    bundles: str | None = None,
    force: bool = False,
    say: Say = print,
) -> list[ConfirmOutcome]:
    """Confirm every selected pair study in ``url``; each pair is stored (and its dashboard note
    rewritten) as soon as it is done, so an interrupted confirm keeps the pairs it finished."""
    if not isinstance(repeats, int) or repeats < 2:
        raise UsageError(f"--repeats {repeats} gives no spread: use 2 or more, e.g. --repeats 3")
    device = parse_devices(devices)[0]
    check_storage(url)
    storage = get_storage(url)
    studies = [s for s in pair_studies(storage, federation) if "config" in s.user_attrs]
    names = sorted({s.user_attrs["federation"] for s in studies})
    if not names:
        raise StorageError(
            f"no dkd-tune pair studies in {mask(url)}"
            + (f" for federation {federation}" if federation else "")
            + ": run dkd-tune first or pass --storage"
        )
    if len(names) > 1:
        raise UsageError(
            f"the storage holds several federations ({', '.join(names)}): pass --federation NAME"
        )
    config = _federation_config(studies)
    wanted = set(parse_pairs(pairs, config.federation.participants))
    chosen = [s for s in studies if tuple(s.user_attrs["pair"]) in wanted]
    if not chosen:
        raise UsageError(f"--pairs {pairs}: none of these pairs has a study in {mask(url)}")
    # Everything that can be refused was checked; from here on, pairs are run and stored.
    from .notes import write_notes  # optuna-dashboard is imported only when notes are written

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bundle = load_bundle_once(config, bundles, device, progress=say)
    say(f"confirming {len(chosen)} pair(s) of {config.name} with {repeats} seeds on {device}")
    outcomes = []
    for s in chosen:
        trials = storage.get_all_trials(s._study_id, deepcopy=False)
        outcome = confirm_pair(s, trials, bundle, config, repeats, device, force)
        outcomes.append(outcome)
        if outcome.record is None:
            say(f"{s.study_name}: {outcome.state} ({outcome.reason})")
            continue
        storage.set_study_user_attr(s._study_id, CONFIRM_ATTR, outcome.record)
        write_notes(storage, url, [s.study_name])
        r = outcome.record
        say(
            f"{s.study_name}: {r['student']}<-{r['teacher']} best "
            f"{_pm(r['best'])}, default {_pm(r['default'])} pp over {repeats} seeds "
            f"({r['seconds']:.1f}s)"
        )
    if any(o.record for o in outcomes):
        # Unconfirmed pairs' noise is pooled over the confirmed ones: every note may have changed.
        write_notes(storage, url, [s.study_name for s in studies])
    return outcomes


def _pm(runs: dict[str, Any]) -> str:
    std = runs["gain_std"]
    return f"{runs['gain_mean']:+.2f}" + (f" ± {std:.2f}" if std is not None else "")
