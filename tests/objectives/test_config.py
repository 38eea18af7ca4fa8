"""Study configs: the shipped files validate, every bad field is named, the hash keys the bundle."""

from pathlib import Path

import pytest

from objectives import ConfigError, apply_overrides, load_config, parse_config

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.mark.parametrize("name", ["fashion-mnist.toml", "cifar10-resnet18.toml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(STUDIES / name)
    assert cfg.federation.participants == 10
    assert len(cfg.federation_hash) == 16


def test_default_is_the_embedded_setup():
    cfg = load_config(STUDIES / "fashion-mnist.toml")
    assert (cfg.data.dataset, cfg.model.name, cfg.federation.partition) == (
        "fashion-mnist",
        "small-cnn",
        "dirichlet:0.5",
    )


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"pretrain": {"epoch": 3}}, "[pretrain].epoch"),
        ({"pretrain": {"epochs": 0}}, "[pretrain].epochs"),
        ({"pretrain": {"lr": "fast"}}, "[pretrain].lr"),
        ({"kd": {"optimizer": "lbfgs"}}, "[kd].optimizer"),
        ({"federation": {"partition": "dirichlet:-1"}}, "[federation].partition"),
        ({"federation": {"partition": "shards:x"}}, "[federation].partition"),
        ({"federation": {"participants": True}}, "[federation].participants"),
        ({"model": {"name": "vgg"}}, "[model].name"),
        ({"data": {"dataset": "mnist"}}, "[data].dataset"),
        ({"datta": {}}, "datta"),
        ({"kd": {"augmentation": "flip"}}, "[kd].augmentation"),
    ],
)
def test_bad_field_is_named(raw, named):
    with pytest.raises(ConfigError) as err:
        parse_config({"name": "x", **raw}, source="t.toml")
    message = str(err.value)
    assert named in message and "t.toml" in message
    assert "\n" not in message


def test_typo_gets_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        parse_config({"name": "x", "pretrain": {"epoch": 3}})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_overrides_take_precedence_and_are_typed(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "c"\n[kd]\nlr = 0.01\n')
    cfg = load_config(path, ["kd.lr=0.2", "pretrain.epochs=2", "federation.partition=iid"])
    assert cfg.kd.lr == 0.2 and cfg.pretrain.epochs == 2 and cfg.federation.partition == "iid"
    with pytest.raises(ConfigError, match=r"\[kd\].lrr"):
        load_config(path, ["kd.lrr=0.2"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        apply_overrides({}, ["kd.lr"])


def test_hash_covers_the_federation_not_the_round():
    base = parse_config({"name": "x"})
    assert parse_config({"name": "x"}).federation_hash == base.federation_hash
    for change in (
        {"seed": 1},
        {"federation": {"participants": 5}},
        {"federation": {"partition": "iid"}},
        {"pretrain": {"epochs": 2}},
        {"model": {"name": "resnet18"}},
        {"data": {"dataset": "cifar10"}},
    ):
        assert parse_config({"name": "x", **change}).federation_hash != base.federation_hash, change
    # The KD round, the search space and where the files live do not change the federation.
    same = parse_config(
        {"name": "x", "kd": {"lr": 0.5}, "search": {"trials": 3}, "data": {"root": "/elsewhere"}}
    )
    assert same.federation_hash == base.federation_hash


def test_a_pair_key_covers_its_two_participants_only_where_the_partition_is_a_file(
    own_federation, tmp_path
):
    """docs/design.md §10 (a federation that grows): with the user's partition file a pair's key
    is its two participants' models, checkpoints and rows, the public set and the dataset; with
    a drawn partition, which a new participant count redraws for all, it is the federation's."""
    import json
    import shutil

    from objectives import load_config
    from objectives.config import pair_change

    drawn = load_config("fashion-mnist-n3")
    more = load_config("fashion-mnist-n3", ["federation.participants=4"])
    assert drawn.pair_hash(0, 1) != more.pair_hash(0, 1)
    assert pair_change(drawn.pair_key(0, 1), more.pair_key(0, 1)).startswith("federation hash (")

    own = load_config(own_federation["config"])
    copy = tmp_path / "own"
    shutil.copytree(own_federation["folder"], copy, ignore=shutil.ignore_patterns("data"))
    blob = json.loads((copy / "partition.json").read_text())
    blob["participants"][2] = blob["participants"][2][:-5]  # participant 2's row changes
    (copy / "partition.json").write_text(json.dumps(blob))
    text = (copy / "own-federation.toml").read_text()
    root = own_federation["folder"] / "data"
    (copy / "own-federation.toml").write_text(text.replace('root = "data"', f'root = "{root}"'))
    changed = load_config(copy / "own-federation.toml")
    assert changed.federation_hash != own.federation_hash
    assert changed.pair_hash(0, 1) == own.pair_hash(0, 1)  # 2's row is not 0-1's round
    assert pair_change(own.pair_key(1, 2), changed.pair_key(1, 2)) == (
        "participant 2's data (its row of the partition file)"
    )
    assert pair_change(own.pair_key(0, 1), own.pair_key(0, 1)) is None
