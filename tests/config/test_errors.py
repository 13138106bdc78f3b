"""Every kind of config error, each asserting what its message names."""

import os
import re

import pytest
import yaml

from config_samples import to_ini
from sfg_app.config import ConfigError, load_settings, settings_from_text


def error_of(load, config, overrides=(), name="c.ini") -> str:
    with pytest.raises(ConfigError) as caught:
        load(config, overrides, name)
    return str(caught.value)


# ------------------------------------------------------------------ unknown names

def test_misspelt_key_names_file_line_key_and_suggestion(load, config):
    text = to_ini(config).replace("max_iter = 100", "max_itr = 5")
    message = error_of(load, text)
    line = text.splitlines().index("max_itr = 5") + 1
    assert re.search(rf"c\.ini, line {line}: \[TRAINING\] has no key 'max_itr'\. "
                     r"Did you mean 'max_iter'\?", message)


def test_key_of_another_section_says_where_it_belongs(load, config):
    config["MR"]["batch_size"] = "4"
    assert "[MR] has no key 'batch_size'. 'batch_size' belongs to [NETWORK]" in error_of(
        load, config)
    config["MR"].pop("batch_size")
    config["NETWORK"]["normalisation"] = "zscore"
    assert "'normalisation' belongs to input sections" in error_of(load, config)


def test_niftynet_key_gets_a_migration_hint(load, config):
    config["TRAINING"]["loss_type"] = "Dice"
    assert re.search(r"\[TRAINING\] has no key 'loss_type'\. sfg sets the loss of each "
                     r"task: `loss` in its \[TASK name\] section", error_of(load, config))


def test_misspelt_key_close_to_a_key_of_another_section(load, config):
    config["MR"]["batch_sise"] = "4"
    assert "Did you mean 'batch_size' of [NETWORK]?" in error_of(load, config)


@pytest.mark.parametrize("header, fixed", [("TRAINIG", "TRAINING"), ("Training", "TRAINING"),
                                           ("SYTEM", "SYSTEM"), ("network", "NETWORK"),
                                           ("INFER", "INFERENCE")])
def test_section_close_to_a_fixed_one_is_an_error_not_an_input(load, config, header, fixed):
    config[header] = {"max_iter": "5"}
    message = error_of(load, config)
    assert f"unknown section [{header}]. Did you mean [{fixed}]?" in message
    assert "path_to_search" not in message  # not treated as an input section


@pytest.mark.parametrize("header", ["MRI", "T2", "T1", "FLAIR", "LABEL", "SEG", "MASK", "BODY",
                                    "IMAGE", "AGE", "brain_mask", "Label-2"])
def test_usual_input_names_are_inputs(load, config, header):
    config[header] = {"path_to_search": "data"}
    assert header in load(config).inputs


def test_niftynet_application_section_points_to_tasks(load, config):
    config["SEGMENTATION"] = {"num_classes": "3"}
    assert "[SEGMENTATION] is NiftyNet's application section; sfg describes what to learn " \
           "with [MULTITASK]" in error_of(load, config)


def test_default_section_is_rejected_not_applied_everywhere(load, config):
    text = "[DEFAULT]\nseed = 3\n\n" + to_ini(config)
    assert "c.ini, line 1: [DEFAULT] is not supported" in error_of(load, text)


@pytest.mark.parametrize("header, expected", [
    ("my images", "invalid section name [my images]"),
    ("task organs", r"A task section is written [TASK name], e.g. [TASK organs]"),
    ("TASK organs!", "a task name is made of letters, digits, _ and -"),
])
def test_invalid_section_names(load, config, header, expected):
    config[header] = {"type": "segmentation"}
    assert expected in error_of(load, config)


# ------------------------------------------------------------------ bad values

@pytest.mark.parametrize("section, key, value, expected", [
    ("TRAINING", "max_iter", "abc", r"\[TRAINING\] max_iter\. Expected an integer >= 0\. "
                                    r"Received max_iter = 'abc'"),
    ("TRAINING", "max_iter", "1.5", r"Expected an integer >= 0\. Received max_iter = '1.5'"),
    ("TRAINING", "lr", "fast", r"\[TRAINING\] lr\. Expected a number > 0"),
    ("TRAINING", "lr", "nan", r"Received lr = 'nan'\. Infinite and NaN values are not"),
    ("TRAINING", "lr", "1/0", r"Expected a number > 0\. Received lr = '1/0'"),
    ("TRAINING", "do_elastic_deformation", "maybe", r"Expected true or false\. Received "
                                                    r"do_elastic_deformation = 'maybe'"),
    ("LABEL", "filename_removefromid", "_seg(", r"Expected a regular expression.*not a "
                                                r"valid regular expression"),
    ("MR", "axcodes", "(R, L, S)", r"Each of R/L, A/P and S/I must appear once"),
    ("MR", "axcodes", "(R, A, X)", r"Item 3 \('X'\) is not one of R, L, A, P, S, I"),
    ("MULTITASK", "image", "MR, MR", r"\[MULTITASK\] image.*A value is repeated"),
    ("SFG", "prior", "unifrom", r"Expected uniform, shared, or a tuple of G probabilities.*"
                                r"Did you mean 'uniform'\?"),
])
def test_wrong_type(load, config, section, key, value, expected):
    config[section][key] = value
    assert re.search(expected, error_of(load, config))


@pytest.mark.parametrize("section, key, value, expected", [
    ("SYSTEM", "seed", "-1", r"\[SYSTEM\] seed\. Expected an integer from 0 to 4294967295\. "
                             r"Received seed = '-1'"),
    ("TRAINING", "lr", "0", r"Expected a number > 0\. Received lr = '0'"),
    ("TRAINING", "exclude_fraction_for_validation", "1",
     r"Expected a number >= 0 and < 1\. Received exclude_fraction_for_validation = '1'"),
    ("TASK synth_ct", "output_interp_order", "6", r"Expected an integer from 0 to 5"),
    ("TRAINING", "random_flipping_axes", "(0, 3)", r"Item 2 \('3'\) is not an integer"),
    ("NETWORK", "cutoff", "(0.9, 0.1)", r"\[NETWORK\] cutoff.*lo must be less than hi"),
    ("MR", "intensity_window", "(100, -100)", r"lo must be less than hi"),
    ("TRAINING", "scaling_percentage", "(-100, 10)", r"Item 1 \('-100'\) is not a number "
                                                     r"> -100"),
])
def test_value_out_of_range(load, config, section, key, value, expected):
    config[section][key] = value
    assert re.search(expected, error_of(load, config))


def test_bad_choice_lists_allowed_values_and_suggests(load, config):
    config["SYSTEM"]["strategy"] = "mirored"
    assert ("invalid value for [SYSTEM] strategy. Expected one of default, mirrored, "
            "multi_worker. Received strategy = 'mirored'. Did you mean 'mirrored'?"
            ) in error_of(load, config)


def test_unknown_registered_name_uses_the_registry_message(load, config):
    config["NETWORK"]["name"] = "sfg_highres3dnett"
    assert re.search(r"Expected a registered network name\. Received name = "
                     r"'sfg_highres3dnett'\. Unknown network 'sfg_highres3dnett'\. Did you "
                     r"mean 'sfg_highres3dnet'\? Registered networks: .*sfg_vgg",
                     error_of(load, config))


@pytest.mark.parametrize("key, value", [("spatial_window_size", "(32, 32)"),
                                        ("spatial_window_size", "(32, 32, 16, 1)"),
                                        ("pixdim", "1.0")])
def test_bad_tuple_length(load, config, key, value):
    config["MR"][key] = value
    count = len(value.split(","))
    assert re.search(rf"\[MR\] {key}\. Expected a tuple of 3 values.*It has {count} value",
                     error_of(load, config))


def test_value_errors_name_the_override(load, config):
    message = error_of(load, config, ["TRAINING.max_iter=-3"])
    assert message.startswith("--set TRAINING.max_iter=-3: invalid value for [TRAINING] "
                              "max_iter")


def test_unknown_key_in_an_override(load, config):
    message = error_of(load, config, ["TRAINING.max_itr=50"])
    assert "--set TRAINING.max_itr=50: [TRAINING] has no key 'max_itr'. Did you mean " \
           "'max_iter'?" in message


@pytest.mark.parametrize("override", ["TRAINING.max_iter", "max_iter=5", ".max_iter=5",
                                      "TRAINING.=5"])
def test_malformed_override(load, config, override):
    assert f"--set {override}: expected SECTION.key=value" in error_of(load, config,
                                                                      [override])


def test_several_problems_are_reported_together(load, config):
    config["SYSTEM"]["seed"] = "-1"
    config["TRAINING"]["max_itr"] = "5"
    message = error_of(load, config)
    assert message.startswith("2 problems in ")
    assert "seed" in message and "max_itr" in message


# --------------------------------------------------------------- missing things

@pytest.mark.parametrize("section, key", [("SYSTEM", "model_dir"), ("NETWORK", "name"),
                                          ("MULTITASK", "image"), ("TASK organs", "target")])
def test_missing_required_key(load, config, section, key):
    del config[section][key]
    assert f"missing required key [{section}] {key}" in error_of(load, config)


def test_missing_required_section(load, config):
    del config["NETWORK"]
    assert "missing required key [NETWORK] name: Registered network." in error_of(load, config)


def test_num_classes_is_required_for_segmentation(load, config):
    del config["TASK organs"]["num_classes"]
    assert "missing required key [TASK organs] num_classes: Number of classes" in \
        error_of(load, config)


def test_task_naming_a_missing_input_section_suggests_one(load, config):
    config["TASK organs"]["target"] = "LABLE"
    assert ("[TASK organs] target = 'LABLE': there is no input section [LABLE] for the task "
            "target. Did you mean 'LABEL'?") in error_of(load, config)


@pytest.mark.parametrize("section, key, value", [
    ("MULTITASK", "image", "MRI"), ("TASK synth_ct", "mask", "BDY"),
    ("NETWORK", "sampling_map", "LABELS"), ("MR", "foreground_type", "BOD")])
def test_every_reference_to_an_input_section_is_checked(load, config, section, key, value):
    config[section][key] = value
    assert re.search(rf"\[{section}\] {key} = '{value}': there is no input section "
                     rf"\[{value}\].*Did you mean", error_of(load, config))


def test_fixed_section_is_not_an_input_section(load, config):
    config["TASK organs"]["target"] = "TRAINING"
    assert "there is no input section [TRAINING]" in error_of(load, config)


def test_listed_task_without_a_section(load, config):
    config["MULTITASK"]["tasks"] = "organs, synth_ct, organz"
    assert ("[MULTITASK] tasks names 'organz', but there is no [TASK organz] section. Did you "
            "mean 'organs'?") in error_of(load, config)


def test_task_section_not_listed(load, config):
    config["MULTITASK"]["tasks"] = "organs"
    assert "[TASK synth_ct] is not listed in [MULTITASK] tasks" in error_of(load, config)


def test_input_section_needs_files(load, config):
    config["CT"] = {"filename_contains": "_ct"}
    assert "input section [CT] defines neither path_to_search nor csv_file" in error_of(
        load, config)


# ---------------------------------------------------------- cross-section rules

def test_loss_must_suit_the_task_type(load, config):
    config["TASK synth_ct"]["loss"] = "dice"
    assert ("invalid value for [TASK synth_ct] loss. Expected a loss for regression: l1, l2, "
            "huber. Received loss = 'dice'") in error_of(load, config)


def test_key_of_another_task_type(load, config):
    config["TASK synth_ct"]["num_classes"] = "3"
    assert ("[TASK synth_ct] num_classes does not apply here: [TASK synth_ct] is a regression "
            "task, and num_classes is for classification and segmentation tasks only"
            ) in error_of(load, config)


def test_image_keys_do_not_apply_to_value_sections(load, config):
    config["AGE"] = {"csv_file": "ages.csv", "value_column": "age", "pixdim": "(1, 1, 1)"}
    assert "[AGE] pixdim does not apply here: [AGE] sets value_column" in error_of(load, config)


def test_value_column_needs_a_csv_file(load, config):
    config["CT"]["value_column"] = "hu"
    assert "[CT] value_column does not apply here: value_column needs csv_file" in error_of(
        load, config)


def test_prior_of_wrong_length(load, config):
    config["SFG"]["prior"] = "(0.5, 0.5)"
    assert re.search(r"invalid value for \[SFG\] prior\. Expected 3 probabilities \(one per "
                     r"task, then the shared group\) summing to 1\. Received prior = "
                     r"\(0\.5, 0\.5\)\. It has 2 values", error_of(load, config))


def test_init_not_summing_to_one(load, config):
    config["SFG"]["init"] = "(0.5, 0.5, 0.5)"
    assert "[SFG] init. Expected 3 probabilities" in error_of(load, config)
    assert "They sum to 1.5" in error_of(load, config)


def test_per_example_sampling_needs_the_reference_implementation(load, config):
    config["SFG"]["sample_per"] = "example"
    assert ("invalid value for [SFG] sample_per. Expected step with impl = fused. Received "
            "sample_per = 'example'. Per-example groups") in error_of(load, config)
    config["SFG"]["impl"] = "reference"
    assert load(config).sfg.sample_per == "example"


def test_tau_min_above_tau(load, config):
    config["SFG"].update(tau="0.5", tau_min="0.6")
    assert "[SFG] tau_min. Expected a temperature at most tau = 0.5" in error_of(load, config)


def test_weighted_sampling_needs_a_map(load, config):
    config["NETWORK"]["window_sampling"] = "weighted"
    assert "[NETWORK] window_sampling = weighted needs [NETWORK] sampling_map" in error_of(
        load, config)


def test_sampling_map_is_refused_by_uniform_sampling(load, config):
    config["NETWORK"].update(window_sampling="uniform", sampling_map="LABEL")
    assert "[NETWORK] sampling_map does not apply here: the uniform sampler reads no " \
           "sampling map" in error_of(load, config)


def test_exclude_fractions_must_leave_training_subjects(load, config):
    config["TRAINING"].update(exclude_fraction_for_validation="0.5",
                              exclude_fraction_for_inference="0.5")
    assert "they must sum to less than 1" in error_of(load, config)


def test_image_sections_need_equal_windows(load, config):
    config["CT"]["spatial_window_size"] = "(16, 16, 16)"
    config["MULTITASK"]["image"] = "MR, CT"
    assert "the image sections disagree on spatial_window_size: [MR] (32, 32, 16), [CT] " \
           "(16, 16, 16)" in error_of(load, config)


def test_image_section_needs_a_window(load, config):
    del config["MR"]["spatial_window_size"]
    assert "missing required key [MR] spatial_window_size" in error_of(load, config)


def test_target_window_must_agree(load, config):
    config["LABEL"]["spatial_window_size"] = "(16, 16, 16)"
    assert re.search(r"\[LABEL\] spatial_window_size\. Expected the image's window "
                     r"\(32, 32, 16\) \(the section is the target of \[TASK organs\]\)",
                     error_of(load, config))


def test_explicit_interpolation_of_a_segmentation_target(load, config):
    config["LABEL"]["interp_order"] = "3"
    assert ("[LABEL] interp_order. Expected 0 (nearest neighbour), because [LABEL] is the "
            "target of the segmentation task 'organs'") in error_of(load, config)


def test_classification_target_must_be_one_value_per_subject(load, config):
    config["TASK organs"]["type"] = "classification"
    config["TASK organs"]["loss"] = "ce"
    assert "a classification target is one value per subject" in error_of(load, config)


def test_border_must_be_less_than_half_the_window(load, config):
    config["INFERENCE"]["border"] = "(4, 4, 8)"
    assert ("invalid value for [INFERENCE] border. Expected each value less than half the "
            "window (32, 32, 16). Received border = (4, 4, 8)") in error_of(load, config)


def test_newer_config_version_is_refused(load, config):
    config["SYSTEM"]["config_version"] = "2"
    assert "[SYSTEM] config_version. Expected a version this code reads (at most 1)" in \
        error_of(load, config)


# ------------------------------------------------------------------ file syntax

def test_duplicate_key_in_ini(load, config):
    text = to_ini(config).replace("max_iter = 100", "max_iter = 100\nmax_iter = 200")
    line = text.splitlines().index("max_iter = 200") + 1
    assert f"c.ini: line {line}: duplicate key 'max_iter' in [TRAINING]" in error_of(load, text)


def test_duplicate_section_in_ini(load, config):
    text = to_ini(config) + "\n[TRAINING]\nlr = 0.1\n"
    assert "duplicate section [TRAINING]" in error_of(load, text)


def test_duplicate_task_section_after_normalising_spaces(load, config):
    text = to_ini(config) + "\n[TASK   organs]\nweight = 2\n"
    assert "duplicate section [TASK organs]" in error_of(load, text)


def test_key_before_any_section(load, config):
    text = "max_iter = 5\n" + to_ini(config)
    assert ("c.ini: line 1: a key comes before any [SECTION] header: 'max_iter = 5'"
            ) in error_of(load, text)


def test_line_that_is_not_a_key(load, config):
    text = to_ini(config).replace("[TRAINING]", "[TRAINING]\njust some words")
    line = text.splitlines().index("just some words") + 1
    assert f"cannot parse line {line}: 'just some words'" in error_of(load, text)


def test_duplicate_key_in_yaml(load, config):
    text = yaml.safe_dump(config, sort_keys=False).replace("  max_iter: '100'\n",
                                                           "  max_iter: 1\n  MAX_ITER: 2\n")
    assert re.search(r"c\.yaml, line \d+: duplicate key 'max_iter' in \[TRAINING\] \(first "
                     r"at .*c\.yaml, line \d+\)", error_of(load, text, name="c.yaml"))


@pytest.mark.parametrize("text, expected", [
    ("SYSTEM: [a, b]\n", r"c\.yaml, line 1: section 'SYSTEM' must be a mapping"),
    ("- SYSTEM\n", r"c\.yaml, line 1: the top level must be a mapping"),
    ("SYSTEM:\n  model_dir: {a: b}\n", r"c\.yaml, line 2: a value must be a scalar or a flat "
                                       r"list"),
    ("SYSTEM: {model_dir: x\n", r"c\.yaml: not valid YAML: .*line 2"),
    ("SYSTEM: !!python/object:os.system {}\n", r"missing required key"),
])
def test_malformed_yaml(load, text, expected):
    assert re.search(expected, error_of(load, text, name="c.yaml"), re.DOTALL)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(ConfigError, match=r"Config file not found: .*nothere\.ini"):
        load_settings(tmp_path / "nothere.ini")
    with pytest.raises(ConfigError, match=r"unknown config file extension '\.toml'\. "
                                          r"Expected one of \.ini, \.cfg, \.yaml, \.yml"):
        load_settings(tmp_path / "c.toml")


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "c.ini"
    path.write_bytes(b"[SYSTEM]\nmodel_dir = \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"c\.ini: not UTF-8 text"):
        load_settings(path)


def test_unknown_syntax():
    with pytest.raises(ConfigError, match="Unknown config syntax 'toml'"):
        settings_from_text("", "toml")


@pytest.mark.parametrize("name, text, message", [
    ("deep.yaml", "SYSTEM:\n  seed: " + "[" * 5000 + "]" * 5000 + "\n",
     r"deep\.yaml: values nested too deep for a config"),
    ("big.ini", "[SYSTEM]\nseed = " + "9" * 5000 + "\n",
     r"big\.ini, line 2: invalid value for \[SYSTEM\] seed\. Expected an integer from 0 to "
     r"4294967295\. Received seed = '9{59}\.\.\. \(5002 characters\)"),
    ("seed.ini", "[SYSTEM]\nseed = 4294967296\n", r"Received seed = '4294967296'"),
])
def test_huge_and_deep_values_are_named_not_tracebacks(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


def test_a_config_path_that_is_not_a_regular_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "config.ini"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"config\.ini: not a regular file"):
        load_settings(fifo)
