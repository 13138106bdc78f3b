"""The config and the components it builds agree on what is valid: a value that passes
the config is accepted by the component, and one the component refuses is refused when
the config is loaded, with the place (file and line, or the --set override) in the
message, never later when the network is built."""

import dataclasses
import re

import pytest

from sfg_app.application.data import RunData
from sfg_app.application.network import iterations
from sfg_app.application.tasks import build_tasks
from sfg_app.config import ConfigError
from sfg_app.layers.grouping import GroupingConfig

#: Candidate values per [SFG] key: boundaries and typical mistakes. The base config has
#: two tasks, so G = 3.
CANDIDATES = {
    "tau": ["0", "1e-9", "1", "-1"],
    "tau_min": ["0", "0.1", "1", "2"],
    "anneal_rate": ["0", "0.5", "-0.1"],
    "init": ["uniform", "shared", "dirichlet", "(0.5, 0.5, 0)", "(0.2, 0.3, 0.5)",
             "(0.5, 0.5)", "(1/3, 1/3, 1/3)", "(0.2, 0.3, 0.6)", "(0, 0, 1)"],
    "prior": ["uniform", "shared", "(0.5, 0.5, 0)", "(0.2, 0.3, 0.5)", "(0.4, 0.4, 0.4)",
              "(1, 0, 0)", "(-0.5, 0.5, 1)"],
    "init_shared": ["0", "0.5", "1", "0.999"],
    "init_alpha": ["0", "0.1"],
    "logit_lr_multiplier": ["0", "1", "100"],
    "warmup_iter": ["0", "10", "-1", "0.5", "1.5", "1"],
}


def _grouping(settings) -> GroupingConfig:
    """As the application builds it from the settings."""
    names = {field.name for field in dataclasses.fields(GroupingConfig)} - {"fixed_from"}
    values = {name: getattr(settings.sfg, name) for name in names}
    values["warmup_iter"] = iterations(values["warmup_iter"], settings.training.max_iter)
    grouping = GroupingConfig(**values)
    grouping.check_num_groups(len(settings.tasks) + 1)
    return grouping


@pytest.mark.parametrize("key, value", [(k, v) for k, values in CANDIDATES.items()
                                        for v in values])
def test_an_sfg_value_the_config_accepts_builds_the_grouping(load, config, key, value):
    try:
        settings = load(config, overrides=[f"SFG.{key}={value}"])
    except ConfigError as error:
        message = str(error)  # the override, or the line of the key it conflicts with
        assert re.match(rf"(--set SFG\.{key}=|.*c\.ini, line \d+: )", message), message
        assert "[SFG] " in message
        return
    _grouping(settings)  # raises if the layers refuse what the config accepted


def test_a_zero_probability_in_the_prior_is_refused_at_load_time(load, config):
    with pytest.raises(ConfigError, match=r"^--set SFG\.prior=\(0\.5, 0\.5, 0\): invalid "
                                          r"value for \[SFG\] prior\. Expected uniform, shared, or a "
                                          r"tuple of G probabilities \(numbers > 0 summing to "
                                          r"1\)\. Received prior = '\(0\.5, 0\.5, 0\)'\. Item 3 "
                                          r"\('0'\) is not a number > 0\.$"):
        load(config, overrides=["SFG.prior=(0.5, 0.5, 0)"])


#: Candidate values of the keys that preprocessing takes from an input section ([MR], an
#: image; [LABEL], a segmentation target) and from [NETWORK].
SECTION_CANDIDATES = [
    ("MR.interp_order", ["0", "5", "6", "-1"]),
    ("MR.match_space", ["check", "resample", "warp"]),
    ("MR.normalisation", ["zscore", "histogram", "minmax"]),
    ("MR.intensity_window", ["(-100, 100)", "(100, -100)", "(0, 0)"]),
    ("MR.percentile_clip", ["(1, 99)", "(1, 101)", "(50, 50)"]),
    ("MR.foreground_type", ["otsu", "threshold", "LABEL"]),
    ("LABEL.normalisation", ["none", "zscore"]),
    ("LABEL.percentile_clip", ["(1, 99)"]),
    ("NETWORK.cutoff", ["(0.01, 0.99)", "(0.2, 0.99)", "(0.01, 0.85)", "(0, 1)"]),
    ("NETWORK.norm_type", ["percentile", "quartile"]),
]


def _run_data(settings) -> RunData:
    """The application's data of a run: it builds the preprocessing and the augmentation
    from the settings (no file is read)."""
    return RunData(settings, build_tasks(settings))


@pytest.mark.parametrize("key, value", [(k, v) for k, values in SECTION_CANDIDATES
                                        for v in values])
@pytest.mark.parametrize("normalisation", ["zscore", "histogram"])
def test_a_section_value_the_config_accepts_builds_the_preprocessing(load, config, key,
                                                                     value, normalisation):
    overrides = [f"MR.normalisation={normalisation}", f"{key}={value}"]
    if key == "MR.foreground_type" and value == "threshold":
        overrides.append("MR.foreground_threshold=10")
    try:
        settings = load(config, overrides=overrides)
    except ConfigError as error:
        message = str(error)
        assert re.match(r"(--set |.*c\.ini, line \d+: )", message), message
        return
    # Raises if preprocessing refuses what the config accepted.
    _run_data(settings).preprocessing.preprocessor


#: Candidate values of the [TRAINING] keys of the augmentation.
AUGMENTATION_CANDIDATES = {
    "random_flipping_axes": ["(0, 1)", "(2,)", "(3,)", "(0, 0)"],
    "flip_probability": ["0", "1", "1.5"],
    "rotation_angle": ["(-10, 10)", "(10, -10)", "(0, 0)"],
    "scaling_percentage": ["(-10, 10)", "(-100, 10)", "(-99, 0)"],
    "do_elastic_deformation": ["true"],
    "num_ctrl_points": ["2", "1"],
    "deformation_sigma": ["0", "-1"],
    "proportion_to_deform": ["0.5", "2"],
    "bias_field_range": ["(-0.5, 0.5)", "(0.5, -0.5)"],
    "bf_order": ["1", "0"],
    "gamma_range": ["(0.5, 2)", "(0, 2)"],
    "noise_std": ["(0, 0.1)", "(0.1, 0.05)"],
}


@pytest.mark.parametrize("key, value", [(k, v) for k, values in AUGMENTATION_CANDIDATES.items()
                                        for v in values])
def test_an_augmentation_value_the_config_accepts_builds_the_augmentation(load, config, key,
                                                                          value):
    overrides = [f"TRAINING.{key}={value}", "TRAINING.rotation_angle=(-5, 5)",
                 "TRAINING.gamma_range=(0.9, 1.1)"]
    overrides = [o for o in overrides[1:] if not o.startswith(f"TRAINING.{key}=")] + \
        overrides[:1]
    try:
        settings = load(config, overrides=overrides)
    except ConfigError as error:
        assert re.match(r"--set TRAINING\.", str(error)), str(error)
        return
    _run_data(settings).windows.augmenter()  # raises if it refuses what the config accepted


def test_a_histogram_cutoff_inside_the_landmarks_is_refused_at_load_time(load, config):
    with pytest.raises(ConfigError, match=r"^--set NETWORK\.cutoff=\(0\.2, 0\.99\): invalid "
                                          r"value for \[NETWORK\] cutoff\. Expected two "
                                          r"fractions \(low, high\) with 0 <= low < 0\.1 and "
                                          r"0\.9 < high <= 1 for norm_type = percentile\. "
                                          r"Received cutoff = \(0\.2, 0\.99\)\. \[MR\] uses "
                                          r"normalisation = histogram\.$"):
        load(config, overrides=["MR.normalisation=histogram", "NETWORK.cutoff=(0.2, 0.99)"])


def test_normalising_a_label_section_is_refused_at_load_time(load, config):
    with pytest.raises(ConfigError, match=r"--set LABEL\.normalisation=zscore: \[LABEL\] "
                                          r"normalisation = zscore, but \[LABEL\] is the "
                                          r"target of the segmentation task 'organs'"):
        load(config, overrides=["LABEL.normalisation=zscore"])


def test_schedules_given_as_fractions_of_max_iter_travel_across_run_lengths(load, config):
    settings = load(config, overrides=["SFG.warmup_iter=0.5", "SFG.finetune_iter=1/3",
                                       "TRAINING.max_iter=240"])
    assert (settings.sfg.warmup_iter, settings.sfg.finetune_iter) == (0.5, 1 / 3)
    assert iterations(settings.sfg.warmup_iter, 240) == 120
    assert iterations(settings.sfg.finetune_iter, 240) == 80
    assert iterations(settings.sfg.warmup_iter, 3000) == 1500
    assert iterations(150, 240) == 150 and iterations(0, 240) == 0
