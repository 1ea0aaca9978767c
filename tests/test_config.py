"""alexctl/config.py: every setting validated in one place, with the paper's defaults, before any work."""

from __future__ import annotations

import json

import pytest

from alexctl import paper
from alexctl.config import (
    Arch,
    ModelConfig,
    PreprocessOptions,
    RuntimeOptions,
    TrainConfig,
    choices,
    from_dict,
    read_config_file,
    to_dict,
)
from alexctl.errors import UserError


def test_defaults_are_the_papers():
    m, t = ModelConfig(), TrainConfig()
    assert (m.arch, m.lrn, m.pooling, m.activation, m.columns, m.width, m.dropout) == (
        "alexnet",
        True,
        "overlapping",
        "relu",
        2,
        1.0,
        0.5,
    )
    assert (t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay) == (90, 128, 0.01, 0.9, 0.0005)
    assert t.lighting_std == paper.LIGHTING_STD == 0.1 and t.flip and t.train_crop == "random"
    assert PreprocessOptions().size == 256 and m.input_size == 224 and ModelConfig(arch="cifar").input_size == 24


@pytest.mark.parametrize(
    "cls, changes, culprit",
    [
        (ModelConfig, {"arch": "vgg"}, "--arch 'vgg' is not one of alexnet, cifar"),
        (ModelConfig, {"columns": 3}, "--columns 3 must be at most 2"),
        (ModelConfig, {"width": 0.0}, "--width 0.0 must be above 0.0"),
        (ModelConfig, {"dropout": 1.0}, "--dropout 1.0 must be below 1.0"),
        (ModelConfig, {"lrn": "yes"}, "--lrn 'yes' is not true or false"),
        (TrainConfig, {"batch_size": 0}, "--batch-size 0 must be at least 1"),
        (TrainConfig, {"batch_size": 2.5}, "--batch-size 2.5 is not a whole number"),
        (TrainConfig, {"lr": -0.1}, "--lr -0.1 must be above 0.0"),
        (TrainConfig, {"lr": "fast"}, "--lr 'fast' is not a number"),
        (TrainConfig, {"momentum": 1.0}, "--momentum 1.0 must be below 1.0"),
        (TrainConfig, {"schedule": "sometimes"}, "--schedule: Bad learning-rate schedule 'sometimes'"),
        (TrainConfig, {"train_crop": "random-resized"}, "--train-crop 'random-resized' is not one of random, center"),
        (TrainConfig, {"subset": -1}, "--subset -1 must be at least 0"),
        (PreprocessOptions, {"holdout": 0.95}, "--holdout 0.95 must be at most 0.9"),
        (PreprocessOptions, {"quality": 0}, "--quality 0 must be at least 1"),
        (RuntimeOptions, {"precision": "fp8"}, "--precision 'fp8' is not one of auto, fp32, bf16"),
        (RuntimeOptions, {"residency": "ram"}, "--residency 'ram' is not one of auto, disk, jpeg, decoded"),
        (RuntimeOptions, {"workers": -2}, "--workers -2 must be at least -1"),
        (TrainConfig, {"weight_decay": float("nan")}, "--weight-decay nan is not a finite number"),  # NaN passes bounds
        (TrainConfig, {"lighting_std": float("inf")}, "--lighting-std inf is not a finite number"),
        (PreprocessOptions, {"holdout": float("nan")}, "--holdout nan is not a finite number"),
    ],
)
def test_a_bad_value_is_one_sentence_naming_the_option(cls, changes, culprit):
    with pytest.raises(UserError) as caught:
        cls(**changes)
    assert str(caught.value).startswith(culprit) and str(caught.value).endswith(".")


def test_ints_are_accepted_as_floats_and_choices_come_from_the_types():
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)
    assert choices(Arch) == ("alexnet", "cifar")


def test_round_trip_and_unknown_keys():
    t = TrainConfig(lr=0.02, schedule="step:30,60", seed=3)
    assert from_dict(TrainConfig, json.loads(json.dumps(to_dict(t)))) == t
    assert from_dict(TrainConfig, {**to_dict(t), "from_a_newer_version": 1}) == t  # files of newer versions
    with pytest.raises(UserError, match="unknown setting 'lrr'"):
        from_dict(TrainConfig, {"lrr": 0.1}, strict=True)


def test_config_files_toml_json_and_a_runs_config(tmp_path):
    toml = tmp_path / "a.toml"
    toml.write_text('lr = 0.005\nbatch-size = 64\ndata = "d/"\n[model]\nwidth = 0.25\n')
    assert read_config_file(toml) == {"lr": 0.005, "batch_size": 64, "data": "d/", "width": 0.25}
    run_config = tmp_path / "config.json"
    run_config.write_text(
        json.dumps(
            {"kind": "train-config", "model": {"arch": "cifar"}, "train": {"lr": 0.1}, "data": {"dir": "/data/x"}}
        )
    )
    assert read_config_file(run_config) == {"arch": "cifar", "lr": 0.1, "data": "/data/x"}
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1")
    with pytest.raises(UserError, match="is not valid TOML"):
        read_config_file(bad)
    with pytest.raises(UserError, match="cannot be read"):
        read_config_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "name, text, culprit",
    [
        ("deep.json", '{"a": ' + "[" * 3000 + "]" * 3000 + "}", "nests its tables or lists too deep"),
        ("model.json", '{"kind": "train-config", "model": [1]}', "'model' is list [1], not a table"),
        ("data.json", '{"kind": "train-config", "data": "x"}', "'data' is str 'x', not a table"),
        ("data.toml", "data = 5\n", "data is 5, not the path of a data directory"),
        ("nested.toml", "[train]\nlr = { value = 1 }\n", "train.lr holds a table, not a value"),
    ],
)
def test_a_config_file_of_another_shape_names_the_file_and_the_key(tmp_path, name, text, culprit):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        read_config_file(path)
    assert str(caught.value).startswith(f"--config {path}") and culprit in str(caught.value)
