"""The federation bundle: built once per hash, loaded without training, refused on mismatch."""

import json

import pytest
import torch

import objectives.bundle as bundle_module
from objectives import FederationError, parse_config, prepare_federation
from objectives.train import accuracies, predict


def test_bundle_content(tiny_bundle):
    b = tiny_bundle
    n_train, n_test = len(b.dataset.train_y), len(b.dataset.test_y)
    assert b.train_logits.shape == (3, n_train, 10) and b.test_logits.shape == (3, n_test, 10)
    assert torch.allclose(b.label_distribution.sum(1), torch.ones(3, dtype=torch.float64))
    meta = json.loads((b.path / "meta.json").read_text())
    assert meta["hash"] == b.hash and len(meta["participants"]) == 3
    for p in range(3):
        # The cached logits and accuracies are what the stored weights really give.
        logits = predict(b.model(p), b.dataset.test_x)
        assert torch.allclose(logits, b.test_logits[p], atol=1e-5)
        acc, local = accuracies(logits, b.dataset.test_y, b.label_distribution[p])
        assert acc == pytest.approx(float(b.accuracy[p])) and local == pytest.approx(
            float(b.local_accuracy[p])
        )
        assert acc > 20  # pre-training learnt something (chance is 10 %)
        # Local accuracy weights the classes this participant holds.
        assert local != pytest.approx(acc)


def test_cache_hit_trains_nothing(tiny_config, tiny_bundle, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached bundle must not train")

    monkeypatch.setattr(bundle_module, "train_supervised", no_training)
    again = prepare_federation(tiny_config, tiny_bundle.path.parent)
    assert again.path == tiny_bundle.path
    assert torch.equal(again.train_logits, tiny_bundle.train_logits)
    assert all(torch.equal(again.states[0][k], v) for k, v in tiny_bundle.states[0].items())


def test_different_config_builds_a_new_bundle(tiny_bundle, tiny_raw):
    changed = parse_config({**tiny_raw, "seed": 1})
    other = prepare_federation(changed, tiny_bundle.path.parent)
    assert other.path != tiny_bundle.path and other.hash != tiny_bundle.hash
    assert not torch.equal(other.partition.participants[0], tiny_bundle.partition.participants[0])


def test_mismatched_bundle_is_refused(tiny_config, tiny_bundle, tmp_path):
    fake = tmp_path / tiny_bundle.path.name
    fake.mkdir()
    meta = json.loads((tiny_bundle.path / "meta.json").read_text())
    (fake / "meta.json").write_text(json.dumps({**meta, "hash": "0" * 16}))
    (fake / "bundle.pt").write_bytes((tiny_bundle.path / "bundle.pt").read_bytes())
    with pytest.raises(FederationError, match="0000000000000000"):
        prepare_federation(tiny_config, tmp_path)


def test_failed_build_leaves_nothing(tmp_path, monkeypatch, tiny_raw):
    cfg = parse_config({**tiny_raw, "seed": 5})

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(bundle_module.torch, "save", crash)
    with pytest.raises(RuntimeError):
        prepare_federation(cfg, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_unwritable_bundle_folder_is_a_clear_error(tiny_raw, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FederationError, match="cannot write bundles"):
        prepare_federation(parse_config({**tiny_raw, "seed": 9}), blocker / "bundles")
