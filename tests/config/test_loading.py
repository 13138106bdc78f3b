"""Loading valid configs: typed values, defaults, paths, YAML, overrides, saving."""

import dataclasses
import os
import pathlib

import pytest
import yaml

from sfg_app.config import (
    ConfigError, load_settings, save_settings, settings_from_dict, settings_from_text)

from config_samples import to_ini


def test_values_are_typed(load, config, tmp_path):
    settings = load(config)
    assert settings.system.seed == 7
    assert settings.inputs["MR"].spatial_window_size == (32, 32, 16)
    assert settings.sfg.prior == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert settings.sfg.anneal_rate == 1e-4
    assert settings.training.rotation_angle == (-10.0, 10.0)
    assert settings.training.scaling_percentage is None
    assert settings.multitask.tasks == ("organs", "synth_ct")
    assert settings.inputs["MR"].filename_contains == ("_mr",)
    assert settings.system.model_dir == tmp_path / "cfg" / "runs" / "pelvis"
    assert settings.source == str(tmp_path / "cfg" / "c.ini")


def test_defaults_and_derived_defaults(load, config):
    settings = load(config)
    model_dir = settings.system.model_dir
    assert settings.system.dataset_split_file == model_dir / "dataset_split.csv"
    assert settings.network.histogram_ref_file == model_dir / "histogram_ref.yaml"
    assert settings.inference.save_seg_dir == model_dir / "inference"
    assert settings.evaluation.save_csv_dir == model_dir / "evaluation"
    assert settings.training.max_checkpoints == 5
    assert settings.training.random_flipping_axes == ()
    # balanced sampling reads the first segmentation task's target
    assert settings.network.sampling_map == "LABEL"
    # label-like sections are resampled with nearest neighbours, the rest linearly
    assert settings.inputs["LABEL"].interp_order == 0
    assert settings.inputs["BODY"].interp_order == 0
    assert settings.inputs["MR"].interp_order == 1
    assert settings.inputs["CT"].interp_order == 1
    config["MR"]["foreground_type"] = "CT"
    assert load(config).inputs["CT"].interp_order == 0  # a foreground mask
    organs, synth_ct = settings.tasks["organs"], settings.tasks["synth_ct"]
    assert (organs.loss, synth_ct.loss) == ("dice_ce", "l1")
    # a task's settings hold the common keys and its own type's, no other type's
    assert not hasattr(organs, "out_channels") and not hasattr(organs, "target_shift")
    assert not hasattr(synth_ct, "num_classes") and synth_ct.out_channels == 1


def test_order_of_inputs_and_tasks(load, config):
    config["MULTITASK"]["tasks"] = "synth_ct, organs"
    settings = load(config)
    assert list(settings.inputs) == ["MR", "CT", "LABEL", "BODY"]
    assert list(settings.tasks) == ["synth_ct", "organs"]


def test_ints_accept_leading_zeros_and_floats_fractions(load, config):
    config["TRAINING"].update(max_iter="03", flip_probability="1/4")
    config["SYSTEM"]["seed"] = "10"
    settings = load(config)
    assert settings.training.max_iter == 3
    assert settings.training.flip_probability == 0.25
    assert settings.system.seed == 10


def test_inline_comments_and_case_insensitive_keys(load, config):
    text = to_ini(config).replace("[TRAINING]", "[TRAINING]\nMAX_Iter = 42  ; comment\n"
                                               "lr_schedule = cosine # another")
    text = text.replace("max_iter = 100\n", "")
    settings = load(text)
    assert settings.training.max_iter == 42
    assert settings.training.lr_schedule == "cosine"


def test_multi_line_lists(load, config):
    text = to_ini(config).replace("path_to_search = data/pelvis\nfilename_contains = _mr",
                                  "path_to_search = data/a,\n    data/b\n    data/c\n"
                                  "filename_contains = _mr")
    folders = load(text).inputs["MR"].path_to_search
    assert [folder.name for folder in folders] == ["a", "b", "c"]


def test_empty_value_keeps_the_default(load, config):
    config["TRAINING"]["lr"] = ""
    assert load(config).training.lr == 1e-3


def test_niftynet_flip_axes_minus_one_means_none(load, config):
    config["TRAINING"]["random_flipping_axes"] = "-1"
    assert load(config).training.random_flipping_axes == ()
    config["TRAINING"]["random_flipping_axes"] = "0, 2"
    assert load(config).training.random_flipping_axes == (0, 2)


def test_paths_resolve_against_the_config_folder(load, config, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config["BODY"] = {"csv_file": "../lists/body.csv"}
    config["SYSTEM"]["model_dir"] = "~/runs/x"
    settings = load(config)
    assert settings.inputs["MR"].path_to_search == (tmp_path / "cfg" / "data" / "pelvis",)
    assert settings.inputs["BODY"].csv_file == tmp_path / "lists" / "body.csv"
    assert settings.system.model_dir == pathlib.Path.home() / "runs" / "x"


def test_override_paths_resolve_against_the_current_folder(load, config, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load(config, ["SYSTEM.model_dir=runs/x"])
    assert settings.system.model_dir == tmp_path / "runs" / "x"
    assert settings.system.dataset_split_file == tmp_path / "runs" / "x" / "dataset_split.csv"


def test_overrides_change_values_in_every_kind_of_section(load, config):
    settings = load(config, ["TRAINING.max_iter=50", "TASK organs.loss=dice",
                             "MR.spatial_window_size=(16, 16, 8)",
                             "INFERENCE.border=(2, 2, 1)", "TRAINING.lr=1/1000"])
    assert settings.training.max_iter == 50
    assert settings.tasks["organs"].loss == "dice"
    assert settings.inputs["MR"].spatial_window_size == (16, 16, 8)
    assert settings.training.lr == 1e-3


def test_override_splits_at_first_equals_then_last_dot(load, config):
    settings = load(config, ["LABEL.filename_removefromid=_seg.nii=x"])
    assert settings.inputs["LABEL"].filename_removefromid == "_seg.nii=x"


def test_override_adds_a_missing_section(load, config):
    settings = load(config, ["EVALUATION.save_csv_dir=/tmp/metrics"])
    assert settings.evaluation.save_csv_dir == pathlib.Path("/tmp/metrics")


def test_override_empty_value_unsets(load, config):
    config["TRAINING"]["scaling_percentage"] = "(-10, 10)"
    assert load(config, ["TRAINING.scaling_percentage="]).training.scaling_percentage is None


def test_yaml_with_the_same_content_gives_equal_settings(load, config, tmp_path):
    yaml_text = yaml.safe_dump(config, sort_keys=False)
    assert load(yaml_text, name="c.yaml") == load(config)
    native = yaml.safe_dump({
        "SYSTEM": {"model_dir": "runs/pelvis", "seed": 7}, **{k: v for k, v in config.items()
                                                              if k != "SYSTEM"},
        "TRAINING": {"max_iter": 100, "rotation_angle": [-10, 10]}}, sort_keys=False)
    assert load(native, name="c.yml") == load(config)


def test_yaml_values_are_read_as_config_text(load, config):
    # YAML would read 1e-3 as a string and `yes` as a boolean; both mean what INI means.
    config["TRAINING"].update(lr="1e-3", do_elastic_deformation="yes")
    text = yaml.safe_dump(config).replace("'1e-3'", "1e-3").replace("'yes'", "yes")
    settings = load(text, name="c.yaml")
    assert settings.training.lr == 1e-3 and settings.training.do_elastic_deformation is True


def test_dict_accepts_python_objects(config, tmp_path):
    config["SYSTEM"]["seed"] = 3
    config["MR"]["spatial_window_size"] = [32, 32, 16]
    config["MR"]["pixdim"] = (1, 1, 2.5)
    config["TRAINING"]["do_elastic_deformation"] = True
    config["SYSTEM"]["model_dir"] = tmp_path / "run"
    settings = settings_from_dict(config, base_dir=tmp_path)
    assert settings.system.seed == 3
    assert settings.inputs["MR"].pixdim == (1.0, 1.0, 2.5)
    assert settings.system.model_dir == tmp_path / "run"
    assert settings.training.do_elastic_deformation is True


def test_save_then_load_gives_equal_settings(load, config, tmp_path):
    config["MR"]["axcodes"] = "(R, A, S)"
    config["SFG"]["init"] = "(0.2, 0.3, 0.5)"
    settings = load(config)
    path = tmp_path / "run" / "settings.yaml"
    save_settings(settings, path)
    assert load_settings(path) == settings
    assert sorted(os.listdir(path.parent)) == ["settings.yaml"]  # no temporary left over
    saved = yaml.safe_load(path.read_text())
    assert saved["MR"]["spatial_window_size"] == [32, 32, 16]
    assert saved["TASK organs"]["num_classes"] == 5
    assert saved["SYSTEM"]["model_dir"] == str(settings.system.model_dir)


def test_to_dict_is_keyed_by_ini_sections(load, config):
    data = load(config).to_dict()
    assert list(data) == ["SYSTEM", "NETWORK", "SFG", "MULTITASK", "TRAINING", "INFERENCE",
                          "EVALUATION", "MR", "CT", "LABEL", "BODY", "TASK organs",
                          "TASK synth_ct"]
    assert data["TRAINING"]["random_flipping_axes"] == []
    assert data["SFG"]["init"] == "shared"


def test_settings_are_read_only(load, config):
    settings = load(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.training.max_iter = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.training = None
    with pytest.raises(TypeError):
        settings.inputs["XX"] = settings.inputs["MR"]


def test_an_override_is_checked_and_rederives_defaults(load, config, tmp_path):
    settings = load(config)
    changed = load(config, [f"SYSTEM.model_dir={tmp_path / 'other'}"])
    assert changed.system.dataset_split_file == tmp_path / "other" / "dataset_split.csv"
    assert settings.system.model_dir != changed.system.model_dir
    assert load(config, ["TASK organs.loss=dice"]).tasks["organs"].loss == "dice"
    assert load(config, ["TRAINING.max_iter=5"]) != settings
    with pytest.raises(ConfigError, match=r"\[TRAINING\] max_iter.*integer >= 0"):
        load(config, ["TRAINING.max_iter=-5"])


def test_section_by_header(load, config):
    settings = load(config)
    assert settings.section("TRAINING") is settings.training
    assert settings.section("TASK organs") is settings.tasks["organs"]
    assert settings.section("MR") is settings.inputs["MR"]
    with pytest.raises(ConfigError, match=r"no section \[NOPE\]"):
        settings.section("NOPE")


def test_two_dimensional_config(load, config):
    config["MR"]["spatial_window_size"] = "(64, 64, 1)"
    config["INFERENCE"]["border"] = "(8, 8, 0)"
    assert load(config).inputs["MR"].spatial_window_size == (64, 64, 1)


def test_image_level_targets_from_a_csv(load, config):
    """UTKFace-like: age regression and gender classification, one value per subject."""
    config["AGE"] = {"csv_file": "ages.csv", "value_column": "age"}
    config["GENDER"] = {"csv_file": "ages.csv", "value_column": "gender"}
    config["MULTITASK"]["tasks"] = "age, gender"
    config["NETWORK"] = {"name": "sfg_vgg"}
    for name in ("organs", "synth_ct"):
        del config[f"TASK {name}"]
    config["TASK age"] = {"type": "regression", "target": "AGE", "target_shift": "40",
                          "target_scale": "20"}
    config["TASK gender"] = {"type": "classification", "target": "GENDER",
                             "num_classes": "2"}
    settings = load(config)
    assert settings.inputs["AGE"].interp_order is None
    assert settings.inputs["AGE"].spatial_window_size is None
    assert settings.tasks["gender"].loss == "ce"
    assert settings.tasks["age"].target_scale == 20.0


def test_settings_from_text_yaml(tmp_path):
    text = ("SYSTEM: {model_dir: run}\nNETWORK: {name: highres3dnet}\n"
            "MR: {path_to_search: d, spatial_window_size: [8, 8, 8]}\n"
            "SEG: {path_to_search: d}\n"
            "MULTITASK: {image: MR, tasks: seg}\n"
            "TASK seg: {type: segmentation, target: SEG, num_classes: 2}\n")
    settings = settings_from_text(text, "yaml", base_dir=tmp_path)
    assert settings.system.model_dir == tmp_path / "run"
    assert settings.tasks["seg"].num_classes == 2
