"""The user's own federation on real files: prepare loads checkpoints (trains nothing) and its
accuracies equal an independent evaluation; the hash follows the files' content; batched trials
mix architectures; an npz source reads the same images; every bad input is one line, exit 2, and
nothing is written."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from objectives import (
    ConfigError,
    load_config,
    load_dataset,
    parse_config,
    prepare_federation,
    run_trial,
)
from objectives.batched import TrialSpec, run_trials
from objectives.models import Net, build_model
from tuner.cli import main


@pytest.fixture(scope="session")
def own_bundle(own_federation, tmp_path_factory):
    config = load_config(own_federation["config"])
    return prepare_federation(config, tmp_path_factory.mktemp("own-bundles"))


def _independent_model(folder: Path, k: int) -> torch.nn.Module:
    """Participant k's model built by hand from the example's files (not through dkd-tune)."""
    if k % 2 == 1:
        net = build_model("small-cnn", 1, 10, 28)
    else:
        spec = importlib.util.spec_from_file_location("models_by_hand", folder / "models.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        net = module.TinyCNN(channels=1, classes=10)
    net.load_state_dict(torch.load(folder / "ckpt" / f"participant-{k}.pt", weights_only=True))
    return net.eval()


def _read_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The PNGs read with Pillow in sorted class / file order, normalised as the config says."""
    xs, ys = [], []
    for c, cls in enumerate(sorted(p.name for p in (folder / "data" / split).iterdir())):
        for path in sorted((folder / "data" / split / cls).iterdir()):
            xs.append(np.asarray(Image.open(path)))
            ys.append(c)
    x = torch.tensor(np.stack(xs)).float().div(255).unsqueeze(1)
    return (x - 0.2860) / 0.3530, torch.tensor(ys)


def test_prepare_accuracies_equal_an_independent_evaluation(own_federation, own_bundle):
    folder = own_federation["folder"]
    x, y = _read_split(folder, "test")
    parts = json.loads((folder / "partition.json").read_text())["participants"]
    train_y = _read_split(folder, "train")[1]
    assert own_bundle.participants == 3
    for k in range(3):
        net = _independent_model(folder, k)
        with torch.no_grad():
            pred = net(x).argmax(1)
        acc = 100.0 * (pred == y).double().mean().item()
        # Local accuracy: per-class accuracy weighted by the participant's own label shares.
        share = torch.bincount(train_y[parts[k]], minlength=10).double() / len(parts[k])
        per_class = torch.tensor([(pred[y == c] == c).double().mean().item() for c in range(10)])
        local = 100.0 * float((per_class * share).sum())
        one_image = 100.0 / len(y)  # channels_last vs contiguous rounding may flip a near tie
        assert abs(float(own_bundle.accuracy[k]) - acc) <= one_image
        assert abs(float(own_bundle.local_accuracy[k]) - local) <= one_image
        # Nothing was trained: the bundle holds the checkpoint's weights exactly.
        state = torch.load(folder / "ckpt" / f"participant-{k}.pt", weights_only=True)
        assert all(torch.equal(own_bundle.states[k][n], t) for n, t in state.items())
    assert type(own_bundle.model(0)).__name__ == "TinyCNN"
    assert isinstance(own_bundle.model(1), Net)
    assert own_bundle.architecture(0) == own_bundle.architecture(2) != own_bundle.architecture(1)


def test_hash_follows_the_checkpoints_content_not_their_place(own_federation, tmp_path):
    folder = own_federation["folder"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    original = load_config(own_federation["config"]).federation_hash
    assert load_config(copy / "own-federation.toml").federation_hash == original
    state = torch.load(copy / "ckpt" / "participant-1.pt", weights_only=True)
    state["head1.bias"] = state["head1.bias"] + 0.01
    torch.save(state, copy / "ckpt" / "participant-1.pt")
    assert load_config(copy / "own-federation.toml").federation_hash != original


def test_batched_trials_of_two_architectures_match_single_trials(own_bundle):
    specs = [
        TrialSpec(0, (1,), temperature=2.0, alpha=0.7, seed=3),
        TrialSpec(1, (0,), temperature=1.0, alpha=0.5, seed=3),
        TrialSpec(2, (1,), temperature=4.0, alpha=0.3, divergence="js", seed=3),
    ]
    batched = run_trials(own_bundle, specs)
    for spec, result in zip(specs, batched, strict=True):
        single = run_trial(
            own_bundle, spec.student, spec.teachers, temperature=spec.temperature,
            alpha=spec.alpha, divergence=spec.divergence, seed=spec.seed,
        )  # fmt: skip
        assert abs(result.accuracy_after - single.accuracy_after) <= 100.0 / 400


def test_npz_source_reads_the_same_images(own_federation, tmp_path):
    """The imagefolder's arrays saved as npz (NHWC uint8), read back: the same tensors; without
    mean/std the training split's own statistics are used, and said so."""
    folder = own_federation["folder"]
    config = load_config(own_federation["config"])
    images = load_dataset(config.data)
    arrays = {}
    for split in ("train", "test"):
        x, y = _read_split(folder, split)
        raw = torch.round((x * 0.3530 + 0.2860) * 255).to(torch.uint8)
        arrays[f"{split}_x"] = raw.permute(0, 2, 3, 1).numpy()  # NHWC
        arrays[f"{split}_y"] = y.numpy()
    np.savez(tmp_path / "fm.npz", **arrays)
    data = {"dataset": "npz", "root": "fm.npz", "channels": 1, "image_size": 28}
    given = parse_config(
        {"name": "n", "data": {**data, "mean": [0.2860], "std": [0.3530]}}, base=tmp_path
    )
    ds = load_dataset(given.data)
    assert torch.equal(ds.train_y, images.train_y) and torch.equal(ds.test_y, images.test_y)
    assert torch.allclose(ds.test_x, images.test_x, atol=1e-5) and ds.classes == 10
    computed = load_dataset(parse_config({"name": "n", "data": data}, base=tmp_path).data)
    unit = arrays["train_x"].astype(np.float64) / 255
    assert "computed from the training split" in computed.note
    assert abs(float(computed.train_x.mean()) - 0.0) < 1e-4  # standardised with its own stats
    assert f"{unit.mean():.4f}"[:5] in computed.note


def test_check_two_heads_refuses_own_participants(own_federation):
    with pytest.raises(ConfigError, match=r"\[\[participants\]\]"):
        load_config(own_federation["config"]).check_two_heads()


# -- bad input: one line, exit 2, nothing written ---------------------------------------------


def _refused(config: Path, tmp_path: Path, capsys) -> str:
    """Run prepare and a tuning on ``config``: both exit 2 with one line; no bundle, no study."""
    bundles, db = tmp_path / "bundles", tmp_path / "tune.db"
    for argv in (
        ["prepare", "--config", str(config), "--bundles", str(bundles)],
        ["--config", str(config), "--bundles", str(bundles), "--storage", f"sqlite:///{db}",
         "--pairs", "0-1", "--trials", "1", "--progress", "quiet"],
    ):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
    assert not db.exists()
    assert not bundles.exists() or not any(bundles.iterdir())
    return err


def _variant(own_federation, tmp_path: Path, edit=None, partition=None) -> Path:
    """A copy of the config beside new files in tmp_path; shared files by absolute path."""
    folder = own_federation["folder"]
    text = own_federation["config"].read_text()
    text = text.replace('root = "data"', f'root = "{folder / "data"}"')
    text = text.replace('"file:partition.json"', f'"file:{folder / "partition.json"}"')
    text = text.replace('"models.py:', f'"{folder / "models.py"}:')
    text = text.replace('"ckpt/', f'"{folder / "ckpt"}/')
    if partition is not None:
        (tmp_path / "p.json").write_text(json.dumps(partition))
        text = text.replace(f"file:{folder / 'partition.json'}", "file:p.json")
    if edit:
        text = edit(text)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def _checkpoint(own_federation, k: int) -> dict:
    return torch.load(own_federation["folder"] / "ckpt" / f"participant-{k}.pt", weights_only=True)


def _swap_ckpt(own_federation, tmp_path, k: int, payload) -> callable:
    """An edit that points participant k at a checkpoint file holding ``payload``."""
    target = tmp_path / f"c{k}.pt"
    if isinstance(payload, bytes):
        target.write_bytes(payload)
    else:
        torch.save(payload, target)
    old = f"{own_federation['folder'] / 'ckpt'}/participant-{k}.pt"
    return lambda text: text.replace(old, str(target))


class _RunsCode:
    """Unpickling this would run code (it writes a marker file): weights-only must refuse it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("ran",))


def test_missing_checkpoint(own_federation, tmp_path, capsys):
    config = _variant(own_federation, tmp_path, lambda t: t.replace("participant-2.pt", "nope.pt"))
    err = _refused(config, tmp_path, capsys)
    assert "participant 2: checkpoint" in err and "nope.pt not found" in err


@pytest.mark.parametrize(
    ("payload", "phrase"),
    [
        ([1, 2, 3], "holds a list, not a state_dict"),
        (b"not a torch file at all", "cannot be loaded weights-only"),
        ("module", "cannot be loaded weights-only"),
        ("code", "cannot be loaded weights-only"),
    ],
)
def test_checkpoint_that_is_not_a_weights_only_state_dict(
    own_federation, tmp_path, capsys, payload, phrase
):
    marker = tmp_path / "marker"
    if payload == "module":
        payload = torch.nn.Linear(2, 2)  # a whole pickled module, not its state_dict
    elif payload == "code":
        payload = {"weight": _RunsCode(str(marker))}
    edit = _swap_ckpt(own_federation, tmp_path, 1, payload)
    err = _refused(_variant(own_federation, tmp_path, edit), tmp_path, capsys)
    assert "participant 1: checkpoint" in err and phrase in err
    assert not marker.exists()  # no code from the checkpoint ran


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ("drop", "missing key 'classifier.bias'"),
        ("add", "unexpected key 'extra'"),
        ("shape", "'classifier.weight' has shape [10, 3]"),
    ],
)
def test_state_dict_that_does_not_fit(own_federation, tmp_path, capsys, change, phrase):
    state = _checkpoint(own_federation, 0)
    if change == "drop":
        del state["classifier.bias"]
    elif change == "add":
        state["extra"] = torch.zeros(1)
    else:
        state["classifier.weight"] = torch.zeros(10, 3)
    edit = _swap_ckpt(own_federation, tmp_path, 0, state)
    err = _refused(_variant(own_federation, tmp_path, edit), tmp_path, capsys)
    assert "participant 0: checkpoint" in err and "does not fit TinyCNN" in err and phrase in err


@pytest.mark.parametrize(
    ("model", "phrase"),
    [
        ("nosuchpkg.models:Net", "tried 'import nosuchpkg.models'"),
        ("missing.py:Net", "model file"),
        ("MODELS:Nope", "has no callable 'Nope'"),
    ],
)
def test_model_string_that_cannot_be_imported(own_federation, tmp_path, capsys, model, phrase):
    models = str(own_federation["folder"] / "models.py")
    model = model.replace("MODELS", models)

    def edit(text: str) -> str:
        return text.replace(f"{models}:TinyCNN", model, 1)

    err = _refused(_variant(own_federation, tmp_path, edit), tmp_path, capsys)
    assert "participant 0" in err and phrase in err


def test_model_whose_output_size_differs_from_the_classes(own_federation, tmp_path, capsys):
    models = own_federation["folder"] / "models.py"
    (tmp_path / "seven.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(models)!r})\n"
        "m = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\n"
        "class Seven(m.TinyCNN):\n"
        "    def forward(self, x):\n        return super().forward(x)[:, :7]\n"
    )  # fmt: skip
    models = str(own_federation["folder"] / "models.py")
    edit = lambda t: t.replace(f"{models}:TinyCNN", "seven.py:Seven", 1)  # noqa: E731
    err = _refused(_variant(own_federation, tmp_path, edit), tmp_path, capsys)
    assert "participant 0: Seven(" in err and "outputs [2, 7]" in err and "10 classes" in err


def _partition(own_federation) -> dict:
    return json.loads((own_federation["folder"] / "partition.json").read_text())


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ("range", "participant 1 has index 1200, out of range"),
        ("two", "is in participant 1 and in participant 0"),
        ("public", "is in participant 0 and in the public split"),
        ("empty", "participant 2 is empty"),
        ("count", "lists 2 participants, the config has 3"),
    ],
)
def test_bad_partition_file(own_federation, tmp_path, capsys, change, phrase):
    p = _partition(own_federation)
    if change == "range":
        p["participants"][1].append(1200)
    elif change == "two":
        p["participants"][1].append(p["participants"][0][0])
    elif change == "public":
        p["participants"][0].append(p["public"][0])
    elif change == "empty":
        p["participants"][2] = []
    else:
        p["participants"].pop()
    err = _refused(_variant(own_federation, tmp_path, partition=p), tmp_path, capsys)
    assert "partition file" in err and "p.json" in err and phrase in err


@pytest.mark.parametrize("odd", ["size", "channels"])
def test_imagefolder_with_an_odd_image(own_federation, tmp_path, capsys, odd):
    data = tmp_path / "data"
    shutil.copytree(own_federation["folder"] / "data", data)
    victim = sorted((data / "test" / "class-3").iterdir())[0]
    img = Image.open(victim)
    (img.resize((32, 32)) if odd == "size" else img.convert("RGB")).save(victim)
    edit = lambda t: t.replace(f'root = "{own_federation["folder"] / "data"}"', 'root = "data"')  # noqa: E731
    err = _refused(_variant(own_federation, tmp_path, edit), tmp_path, capsys)
    assert f"test/class-3/{victim.name} is" in err and "give every image one size" in err


def test_mean_std_length_differs_from_channels(own_federation, tmp_path, capsys):
    edit = lambda t: t.replace("mean = [0.286]", "mean = [0.286, 0.3, 0.3]")  # noqa: E731
    err = _refused(_variant(own_federation, tmp_path, edit), tmp_path, capsys)
    assert "[data].mean has 3 value(s) but channels = 1" in err
