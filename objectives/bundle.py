"""The federation bundle: partitions, pre-trained weights, cached logits and accuracies before KD.

Built once per federation hash and kept on disk at ``<bundle_dir>/<name>-<hash>/``; asking again
with the same config loads it and trains nothing. Everything a trial needs that does not depend on
the trial's parameters is here, so a trial never runs a teacher forward pass. The participants
are pre-trained here (``[model]`` + ``[pretrain]``) or, for the user's own federation
(``[[participants]]``), loaded from their checkpoints: then nothing is trained, only their logits
are cached.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .config import StudyConfig
from .data import Dataset, load_dataset
from .errors import FederationError
from .models import build_model
from .participants import load_participants, new_model
from .partition import Partition, make_partition
from .train import accuracies, predict, train_supervised

DEFAULT_BUNDLE_DIR = "bundles"
BUNDLE_DIR_ENV = "DKD_TUNE_BUNDLES"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DeviceTensors:
    """The bundle's tensors copied once to one device, for trials to index."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    train_logits: Tensor  # [participants, n_train, classes]
    public: Tensor
    public_x: Tensor  # the public split's inputs, gathered once (every public trial uses them)
    participants: tuple[Tensor, ...]


@dataclass
class FederationBundle:
    """One federation, ready for trials. Tensors are on the CPU; ``on(device)`` copies them."""

    config: StudyConfig
    hash: str
    dataset: Dataset
    partition: Partition
    states: list[dict[str, Tensor]]
    train_logits: (
        Tensor  # every participant's logits on the whole training split (public + all locals)
    )
    test_logits: Tensor  # [participants, n_test, classes]
    label_distribution: Tensor  # [participants, classes], float64
    accuracy: Tensor  # [participants] global test accuracy before KD, %
    local_accuracy: Tensor  # [participants] local accuracy before KD, %
    meta: dict
    path: Path | None = None
    _on: dict[str, DeviceTensors] = field(default_factory=dict, repr=False)

    @property
    def participants(self) -> int:
        return len(self.partition.participants)

    def architecture(self, participant: int) -> str:
        """What ``participant``'s model is built from: equal strings, equal architectures
        (objectives.batched stacks only students of one architecture)."""
        return _architecture(self.config, participant)

    def new_model(self, participant: int) -> nn.Module:
        """An untrained model of ``participant``'s architecture, on the CPU."""
        return _new_model(self.config, self.dataset, participant)

    def model(self, participant: int, device: str | torch.device = "cpu") -> nn.Module:
        """A fresh copy of ``participant``'s pre-trained model on ``device``."""
        net = self.new_model(participant)
        net.load_state_dict(self.states[participant])
        return net.to(device)

    def on(self, device: str | torch.device) -> DeviceTensors:
        """The tensors trials index, on ``device``, copied at most once per process and device."""
        key = str(torch.device(device))
        if key not in self._on:
            ds = self.dataset
            public = self.partition.public.to(device)
            self._on[key] = DeviceTensors(
                train_x=ds.train_x.to(device),
                train_y=ds.train_y.to(device),
                test_x=ds.test_x.to(device),
                test_y=ds.test_y.to(device),
                train_logits=self.train_logits.to(device),
                public=public,
                public_x=ds.train_x.to(device)[public],
                participants=tuple(p.to(device) for p in self.partition.participants),
            )
        return self._on[key]

    def summary(self) -> list[dict]:
        """Per participant: local size and accuracies before KD (what `prepare` prints)."""
        rows = [
            {
                "participant": p,
                "samples": len(self.partition.participants[p]),
                "accuracy": round(float(self.accuracy[p]), 2),
                "local_accuracy": round(float(self.local_accuracy[p]), 2),
            }
            for p in range(self.participants)
        ]
        for row, spec in zip(rows, self.config.participants, strict=False):
            row["model"] = spec.describe()  # the user's own: architectures may differ
        return rows


def _architecture(config: StudyConfig, participant: int) -> str:
    if config.participants:
        spec = config.participants[participant]
        return f"{spec.model} {sorted(spec.kwargs.items())!r}"
    return config.model.name


def _new_model(config: StudyConfig, ds: Dataset, participant: int) -> nn.Module:
    if config.participants:
        return new_model(config.participants[participant], participant)
    return build_model(config.model.name, ds.channels, ds.classes, ds.image_size)


@dataclass(frozen=True)
class Checked:
    """A federation's inputs, read and checked before anything is written: its data, its
    partition, and (for ``[[participants]]``) every participant's model with its weights."""

    dataset: Dataset
    partition: Partition
    models: list[nn.Module] | None  # None: participants are pre-trained by build_bundle


_CHECKED: dict[str, Checked] = {}


def check_federation(config: StudyConfig) -> Checked:
    """Read and check everything a bundle is built from, writing nothing, so that bad input
    (data, partition, a participant's model or checkpoint) is refused before a bundle folder or a
    study exists. Kept per process until the bundle is built from it."""
    key = config.federation_hash  # reads every file the config names: missing ones fail here
    if key not in _CHECKED:
        ds = load_dataset(config.data)
        partition = make_partition(ds.train_y, config.federation, config.seed)
        models = None
        if config.participants:
            models = load_participants(config.participants, ds.train_x, ds.classes)
        _CHECKED[key] = Checked(ds, partition, models)
    return _CHECKED[key]


def bundle_dir(explicit: str | Path | None = None) -> Path:
    """Where bundles live: the argument, else $DKD_TUNE_BUNDLES, else ./bundles."""
    return Path(explicit or os.environ.get(BUNDLE_DIR_ENV) or DEFAULT_BUNDLE_DIR)


def bundle_path(config: StudyConfig, directory: str | Path | None = None) -> Path:
    return bundle_dir(directory) / f"{config.name}-{config.federation_hash}"


def build_bundle(
    config: StudyConfig,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    checked: Checked | None = None,
) -> FederationBundle:
    """Partition, pre-train every participant on its own data only (or load the user's
    checkpoints), cache logits and accuracies."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    checked = checked or check_federation(config)
    ds, partition = checked.dataset, checked.partition
    if ds.note:
        say(ds.note)
    label_dist = partition.label_distribution(ds.train_y, ds.classes)
    train_x, train_y, test_x = ds.train_x.to(device), ds.train_y.to(device), ds.test_x.to(device)
    states, train_logits, test_logits, acc, local_acc, seconds = [], [], [], [], [], []
    n = len(partition.participants)
    for p, indices in enumerate(partition.participants):
        t0 = time.perf_counter()
        if checked.models is not None:  # the user's checkpoint: nothing to train
            net = checked.models[p].to(device)
            how = f"{config.participants[p].describe()} from its checkpoint"
        else:
            # Each participant's initialisation and data order depend on (seed, participant) only.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed * 10_007 + p)
                net = _new_model(config, ds, p).to(device)
            gen = torch.Generator().manual_seed(config.seed * 10_007 + p)
            idx = indices.to(device)
            train_supervised(net, train_x[idx], train_y[idx], config.pretrain, gen)
            how = "pre-trained"
        states.append({k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        train_logits.append(predict(net, train_x).cpu())
        test_logits.append(predict(net, test_x).cpu())
        a, loc = accuracies(test_logits[-1], ds.test_y, label_dist[p])
        acc.append(a)
        local_acc.append(loc)
        seconds.append(time.perf_counter() - t0)
        say(
            f"participant {p} ({p + 1} of {n}): {how}, {len(indices)} samples, "
            f"accuracy {a:.2f}%, local {loc:.2f}%, {seconds[-1]:.1f}s"
        )
    meta = {
        "hash": config.federation_hash,
        "name": config.name,
        "config": config.to_dict(),
        "dataset_fingerprint": ds.fingerprint,
        "data_note": ds.note,
        "from_checkpoints": checked.models is not None,
        "pretrain_seconds": round(time.perf_counter() - started, 2),
        "participant_seconds": [round(s, 2) for s in seconds],
        "device": str(device),
        "torch": torch.__version__,
        "host": platform.node(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return FederationBundle(
        config=config,
        hash=config.federation_hash,
        dataset=ds,
        partition=partition,
        states=states,
        train_logits=torch.stack(train_logits),
        test_logits=torch.stack(test_logits),
        label_distribution=label_dist,
        accuracy=torch.tensor(acc, dtype=torch.float64),
        local_accuracy=torch.tensor(local_acc, dtype=torch.float64),
        meta=meta,
    )


_TENSOR_FIELDS = ("train_logits", "test_logits", "label_distribution", "accuracy", "local_accuracy")


def save_bundle(bundle: FederationBundle, path: Path) -> None:
    """Write atomically: into a temporary sibling folder, then one rename, so a reader never sees
    half a bundle and a crash leaves nothing that looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        blob = {name: getattr(bundle, name) for name in _TENSOR_FIELDS}
        blob["states"] = bundle.states
        blob["public"] = bundle.partition.public
        blob["participants"] = list(bundle.partition.participants)
        torch.save(blob, tmp / "bundle.pt")
        summary = {**bundle.meta, "participants": bundle.summary()}
        (tmp / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.path = path


def load_bundle(path: str | Path, config: StudyConfig) -> FederationBundle:
    """Load a bundle and refuse it unless its hash and dataset match ``config``."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        blob = torch.load(path / "bundle.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise FederationError(
            f"bundle {path} is unreadable ({exc.__class__.__name__}): delete it and run "
            "'dkd-tune prepare' to rebuild"
        ) from None
    if meta.get("hash") != config.federation_hash:
        raise FederationError(
            f"bundle {path} has federation hash {meta.get('hash')} but the config gives "
            f"{config.federation_hash}: point at the bundle of this config "
            "or run 'dkd-tune prepare'"
        )
    ds = load_dataset(config.data)
    if meta.get("dataset_fingerprint") != ds.fingerprint:
        raise FederationError(
            f"bundle {path} was built from other {config.data.dataset} files than the ones found "
            "now: use the same dataset files or delete the bundle to rebuild it"
        )
    return FederationBundle(
        config=config,
        hash=meta["hash"],
        dataset=ds,
        partition=Partition(public=blob["public"], participants=tuple(blob["participants"])),
        states=blob["states"],
        meta=meta,
        path=path,
        **{name: blob[name] for name in _TENSOR_FIELDS},
    )


def prepare_federation(
    config: StudyConfig,
    directory: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> FederationBundle:
    """The bundle of ``config``: loaded if it exists, else built and saved.

    A lock file makes a second process that asks for the same bundle wait and then load it,
    instead of training the whole federation a second time.
    """
    path = bundle_path(config, directory)
    if (path / "meta.json").is_file():
        return load_bundle(path, config)
    checked = check_federation(config)  # bad input is refused here, before anything is written
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.parent / f".{path.name}.lock", "w")  # noqa: SIM115 (held across the build)
    except OSError as exc:
        raise FederationError(
            f"cannot write bundles to {path.parent} ({exc.strerror}): pass a writable folder "
            f"(--bundles or ${BUNDLE_DIR_ENV})"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "meta.json").is_file():
            return load_bundle(path, config)
        bundle = build_bundle(config, device=device, progress=progress, checked=checked)
        save_bundle(bundle, path)
    _CHECKED.pop(config.federation_hash, None)  # the bundle holds it all now
    return bundle
