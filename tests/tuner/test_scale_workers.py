"""What a worker joining from another machine must agree on: the bundle (by content digest: a
different or missing one is refused in one line, nothing written, nothing built), the run's
settings (budget, precision, heartbeat) unless it brings its own; how many workers a machine
starts (--devices auto, --workers-per-device); bf16 autocast on the CPU path."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import torch
from tuner_helpers import db_digest, finished, trials_of

from objectives import TrialError, load_config, prepare_federation, run_trial
from tuner import StorageError, TuneOptions, UsageError, join, tune
from tuner.cli import main
from tuner.options import worker_devices
from tuner.store.storage import get_storage
from tuner.worker.fleet import DIGEST_ATTR, SETTINGS_ATTR


def test_workers_per_device() -> None:
    gpus = ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices(gpus, None, None) == gpus  # --devices auto: one worker per GPU
    assert worker_devices(gpus, None, 2) == ["cuda:0"] * 2 + ["cuda:1"] * 2 + ["cuda:2"] * 2
    assert worker_devices(gpus, 4, None) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert worker_devices(["cpu"], None, None) == ["cpu"]  # no GPU: one CPU worker, as before
    assert worker_devices(["cpu"], None, 3) == ["cpu"] * 3


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory: pytest.TempPathFactory) -> TuneOptions:
    """A finished run of two pairs (bf16, a 2 s heartbeat) whose settings a worker joins. Shared
    by the module: only the last test adds trials to it."""
    o = TuneOptions(
        confirm=0,  # the joining worker's settings are the subject; its confirmation: elsewhere
        config=tiny["config"],
        bundles=tiny["bundles"],
        storage=f"sqlite:///{tmp_path_factory.mktemp('join') / 'run.db'}",
        pairs="0-1,0-2",
        trials=2,
        pruner="none",
        progress="quiet",
        precision="bf16",
        heartbeat_interval=2,
        heartbeat_grace=6,
    )
    tune(o, say=lambda _m: None)
    return o


def _tampered_copy(tiny: dict, folder: Path) -> str:
    """The tiny bundle with one cached logit changed: same federation hash, other content."""
    config = load_config(tiny["config"])
    source = prepare_federation(config, directory=tiny["bundles"]).path
    target = folder / source.name
    shutil.copytree(source, target)
    blob = torch.load(target / "bundle.pt", weights_only=True)
    blob["train_logits"][0, 0, 0] += 1.0
    torch.save(blob, target / "bundle.pt")
    return str(folder)


def test_another_bundle_or_none_is_refused(run: TuneOptions, tiny, tmp_path: Path) -> None:
    before = db_digest(run.storage)
    other = _tampered_copy(tiny, tmp_path / "other")
    for attempt in (
        lambda: join(
            TuneOptions(storage=run.storage, bundles=other), "tiny", lambda _m: None
        ),
        lambda: tune(dataclasses.replace(run, bundles=other), say=lambda _m: None),
    ):
        with pytest.raises(StorageError) as err:
            attempt()
        assert "is not the one study tiny/0-1" in str(err.value) and "\n" not in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StorageError) as err:
        join(
            TuneOptions(storage=run.storage, bundles=str(empty)), "tiny", lambda _m: None
        )
    assert "no bundle of federation tiny" in str(err.value)
    assert list(empty.iterdir()) == []  # a worker never builds (pre-trains) a bundle itself
    assert db_digest(run.storage) == before


def test_a_worker_with_a_config_of_another_federation_is_refused(
    run: TuneOptions, tiny, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(
        Path(tiny["config"]).read_text().replace("train_size = 1200", "train_size = 1100")
    )
    for own, opts, phrase in (
        ("config", {"config": str(other)}, "--config gives federation hash"),
        ("pairs", {"pairs": "1-3"}, "pair 1-3 is not part of the run"),
    ):
        with pytest.raises(UsageError) as err:
            join(
                TuneOptions(storage=run.storage, bundles=tiny["bundles"], **opts),
                "tiny",
                lambda _m: None,
                own=(own,),
            )
        assert phrase in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--workers", "2", "--workers-per-device", "2"], "not both"),
        (["--precision", "fp16"], "unknown precision 'fp16'"),
        (["--heartbeat-interval", "5", "--heartbeat-grace", "6"], "at least twice"),
        (["--set", "kd.lr=0.1"], "pass --config FILE with it"),
    ],
)
def test_bad_worker_options_are_one_line(
    run: TuneOptions, args: list[str], phrase: str, capsys: pytest.CaptureFixture
) -> None:
    before = db_digest(run.storage)
    assert main(["worker", "--storage", run.storage, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and phrase in err, err
    assert db_digest(run.storage) == before


def test_bf16_autocast_changes_the_numbers_not_the_outcome(tiny) -> None:
    """On the CPU path too: bf16 trains with other rounding (so autocast is really on) and the
    result stays finite; an unknown precision is refused. (Whether bf16 moves results beyond
    trial-to-trial noise is a measurement: bench/mixed_precision.py.)"""
    config = load_config(tiny["config"])
    bundle = prepare_federation(config, directory=tiny["bundles"])
    recipe = dataclasses.replace(config.kd, lr=0.1, epochs=3)  # enough steps to move predictions
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two busy cores are many times slower than one
    try:
        fp32, bf16 = (
            [run_trial(bundle, 0, [1], seed=s, recipe=recipe, precision=p) for s in range(3)]
            for p in ("fp32", "bf16")
        )
    finally:
        torch.set_num_threads(threads)
    assert [r.accuracy_after for r in fp32] != [r.accuracy_after for r in bf16]
    assert all(math.isfinite(r.gain) for r in bf16)
    with pytest.raises(TrialError, match="unknown precision 'fp16'"):
        run_trial(bundle, 0, [1], precision="fp16")


def test_a_worker_takes_the_runs_settings_unless_given_its_own(run: TuneOptions, tiny) -> None:
    """Last in the module: it adds trials to the shared run."""
    storage = get_storage(run.storage)
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name("tiny/0-1"))
    assert len(attrs[DIGEST_ATTR]) == 16
    settings = attrs[SETTINGS_ATTR]
    assert (settings["precision"], settings["heartbeat_interval"], settings["heartbeat_grace"]) == (
        "bf16",
        2,
        6,
    )
    mine = TuneOptions(
        storage=run.storage, bundles=tiny["bundles"], pairs="0-2", trials=3
    )
    summary = join(mine, "tiny", lambda _m: None, own=("pairs", "trials"))
    assert summary.finished == 1
    used = summary.opts  # the run's settings, applied to a copy of this worker's options
    assert (used.precision, used.heartbeat_interval, used.heartbeat_grace) == ("bf16", 2, 6)
    assert mine.precision == "fp32"  # the caller's options as they were
    assert finished(trials_of(run.storage, "tiny/0-1")) == 2  # not this worker's pair
    joined = trials_of(run.storage, "tiny/0-2")
    assert finished(joined) == 3
    assert {t.user_attrs["precision"] for t in joined} == {"bf16"}
