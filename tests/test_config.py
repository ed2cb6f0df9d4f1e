import pytest
import yaml

from trainlab.config import (
    AugmentConfig,
    ConfigError,
    TrainConfig,
    apply_overrides,
    auto_epochs,
    build_config,
    config_to_yaml,
    deep_merge,
    load_config,
    parse_key_values,
    parse_value,
)


def test_defaults_are_the_documented_recipe():
    config = TrainConfig()
    assert config.data.dataset == "mnist-5k" and config.model.name == "fastnet"
    assert config.epochs == "auto" and config.data.augment == "auto"
    assert config.resolved_mode() == "min"


def test_layering_defaults_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  name: sgd\n  lr: 0.5\ndata:\n  batch_size: 32\n")
    config = load_config(path, ["optim.lr=0.05", "model.options.width=2"])
    assert config.optim.name == "sgd" and config.optim.lr == 0.05
    assert config.data.batch_size == 32 and config.data.dataset == "mnist-5k"
    assert config.model.options == {"width": 2}


def test_a_later_layer_choosing_the_other_way_replaces_the_earlier_one(tmp_path):
    """val_size/val_fraction and train_size/train_fraction say one thing two ways."""
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  val_size: 500\n  train_size: 1000\n")
    config = load_config(path, ["data.val_fraction=0.2", "data.train_fraction=0.5"])
    assert config.data.val_size is None and config.data.val_fraction == 0.2
    assert config.data.train_size is None and config.data.train_fraction == 0.5
    kept = load_config(path, ["data.batch_size=32"]).data  # not chosen again: the file's stay
    assert kept.val_size == 500 and kept.train_size == 1000
    base = {"data": {"train_fraction": 0.5}}  # a file's choice replaces the base's too
    assert load_config(path, base=base).data.train_fraction is None
    with pytest.raises(ConfigError, match="not both"):  # both in one layer: the user's conflict
        load_config(None, ["data.train_fraction=0.5", "data.train_size=100"])


def test_yaml_round_trip_is_exact():
    config = load_config(overrides=["data.augment.rotate=15", "epochs=7", "budget=30"])
    again = build_config(yaml.safe_load(config_to_yaml(config)))
    assert again == config
    assert again.data.augment == AugmentConfig(rotate=15)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.05", 0.05),
        ("1e-3", 1e-3),
        ("true", True),
        ("[1, 2]", [1, 2]),
        ("adam", "adam"),
        ("", ""),
        ("null", None),
    ],
)
def test_parse_value_reads_like_yaml(text, value):
    assert parse_value(text) == value


def test_parse_key_values():
    assert parse_key_values("rotate=15, translate=0.1,hflip=true", "--augment") == {
        "rotate": 15,
        "translate": 0.1,
        "hflip": True,
    }
    assert parse_key_values("min-delta=0.01", "x") == {"min_delta": 0.01}
    with pytest.raises(ConfigError, match="key=value"):
        parse_key_values("rotate", "--augment")


def test_overrides_do_not_touch_the_input():
    tree = {"optim": {"lr": 1.0}}
    assert apply_overrides(tree, ["optim.lr=2"]) == {"optim": {"lr": 2}}
    assert tree == {"optim": {"lr": 1.0}}


def test_override_through_a_scalar_is_refused():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])


def test_deep_merge_replaces_model_options_whole():
    base = {"model": {"name": "vgg", "options": {"depth": 11, "dropout": 0.5}}}
    merged = deep_merge(base, {"model": {"options": {"depth": 13}}})
    assert merged["model"] == {"name": "vgg", "options": {"depth": 13}}


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        (["optim.lr=-1"], "optim.lr"),
        (["optim.name=lbfgs"], "optim.name"),
        (["epochs=0"], "epochs"),
        (["data.batch_size=0"], "data.batch_size"),
        (["device=tpu"], "device"),
        (["optim.name=nesterov", "optim.momentum=0"], "nesterov needs a momentum"),
        (["typo=1"], "typo"),
        (["data.train_fraction=0.5", "data.train_size=100"], "train_fraction or train_size"),
    ],
)
def test_invalid_values_name_the_key(overrides, where):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=overrides)
    assert where in str(error.value)


def test_a_fill_alone_is_refused_instead_of_turning_augmentation_off():
    # Over the default `auto`, this used to build an augmentation with every operation off.
    with pytest.raises(ConfigError) as error:
        load_config(overrides=["data.augment.fill=reflect"])
    message = str(error.value)
    assert "name the operations too" in message and "Input should be" not in message
    with pytest.raises(ConfigError, match="name the operations too"):
        load_config(overrides=["data.augment.fill=zero"])  # the default fill, alone: the same
    assert load_config(overrides=["data.augment.rotate=10", "data.augment.fill=reflect"])
    saved = yaml.safe_load(config_to_yaml(load_config(overrides=["data.augment={}"])))
    assert build_config(saved).data.augment.is_identity()  # a saved "none" sets every field


def test_a_config_whose_aliases_expand_to_billions_of_values_is_refused(tmp_path):
    from trainlab.models.layers import shown

    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for level in range(1, 9):  # 10⁹ values in a few hundred bytes
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    (tmp_path / "laughs.yaml").write_text("\n".join(lines) + "\nmodel: {options: {dropout: *a8}}\n")
    with pytest.raises(ConfigError, match="expands to more than 100,000 values"):
        load_config(tmp_path / "laughs.yaml")
    (tmp_path / "anchors.yaml").write_text("optim: &o {lr: 0.01}\nschedule: {name: cosine}\n")
    assert load_config(tmp_path / "anchors.yaml").optim.lr == 0.01  # a few aliases are fine
    assert len(shown(list(range(10**6)))) < 100  # an error message shows a bounded value


def test_a_section_given_twice_is_refused_not_half_lost(tmp_path):
    (tmp_path / "twice.yaml").write_text("optim:\n  lr: 0.01\nepochs: 2\noptim:\n  name: sgd\n")
    with pytest.raises(ConfigError, match="'optim' is given twice"):
        load_config(tmp_path / "twice.yaml")  # was: lr 0.01 silently dropped
    (tmp_path / "merge.yaml").write_text("base: &b {lr: 0.1}\noptim: {<<: *b, lr: 0.01}\n")
    from trainlab.config import read_yaml_file

    assert read_yaml_file(tmp_path / "merge.yaml")["optim"] == {"lr": 0.01}  # merges may repeat


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_auto_epochs_shrink_with_more_data():
    assert auto_epochs(3600) == 8
    assert auto_epochs(54000) == 5
    assert auto_epochs(10) == 30 or auto_epochs(10) <= 30
    assert auto_epochs(10**7) == 3


def test_scientific_notation_is_a_float_everywhere(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\nmodel:\n  name: vit\n  options:\n    eps: 5E-6\n")
    config = load_config(path, ["optim.weight_decay=1e-4"])
    assert config.optim.lr == 1e-3 and config.optim.weight_decay == 1e-4
    assert config.model.options["eps"] == 5e-6 and isinstance(config.model.options["eps"], float)
    assert parse_value("-2.5e+2") == -250.0 and parse_value("1_000") == 1000


def test_names_and_paths_from_flags_stay_text_but_null_means_none():
    from trainlab.config import load_config

    config = load_config(None, ["model.name=hf:", "data.root=null", "device='cpu'", "out=~"])
    assert (config.model.name, config.data.root, config.device, config.out) == (
        "hf:", None, "cpu", None,
    )  # fmt: skip
    assert load_config(None, ['data.dataset="mnist-5k"']).data.dataset == "mnist-5k"


def test_value_lists_keep_quoted_brackets_and_one_trailing_comma():
    from trainlab.config import ConfigError, split_top_level

    assert split_top_level("0.1,0.2,") == ["0.1", "0.2"]
    assert split_top_level("name='smile :)',t=\"(a,b)\"") == ["name='smile :)'", 't="(a,b)"']
    assert split_top_level("[1,[2,3]],4") == ["[1,[2,3]]", "4"]
    with pytest.raises(ConfigError, match="empty value between commas"):
        split_top_level("0.1,,0.2")
