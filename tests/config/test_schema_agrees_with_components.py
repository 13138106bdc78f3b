"""The config and the components it builds agree on what is valid: a value that passes
the config is accepted by the component, and one the component refuses is refused when
the config is loaded, with the place (file and line, or the --set override) in the
message, never later when the network is built."""

import dataclasses
import re

import pytest

from sfg_app.application.data import RunData
from sfg_app.application.tasks import build_tasks
from sfg_app.arguments import schedule_iterations
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
    grouping = GroupingConfig(**values).for_run(settings.training.max_iter,
                                                settings.sfg.finetune_iter)
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
    assert schedule_iterations(settings.sfg.warmup_iter, 240) == 120
    assert schedule_iterations(settings.sfg.finetune_iter, 240) == 80
    assert schedule_iterations(settings.sfg.warmup_iter, 3000) == 1500
    assert schedule_iterations(150, 240) == 150 and schedule_iterations(0, 240) == 0
    assert schedule_iterations(1 / 3, 1) == 1  # a share of the run lasts a step


def test_the_grouping_of_a_run_holds_its_schedules_in_iterations(load, config):
    """allocation = auto: the agreement over a third of a run whose third holds 300
    iterations, the learned recipe (150 iterations of warm-up) in a shorter one; the
    groups are fixed when the agreement's warm-up ends, or for the last finetune_iter
    iterations of learned ones."""
    for max_iter, expected in [(300, ("learned", 150, 200)), (800, ("learned", 150, 700)),
                               (900, ("agreement", 300, 300)),
                               (3000, ("agreement", 1000, 1000))]:
        grouping = _grouping(load(config, overrides=[f"TRAINING.max_iter={max_iter}"]))
        assert (grouping.allocation, grouping.warmup_iter, grouping.fixed_from) == expected
    settings = load(config, overrides=["TRAINING.max_iter=300", "SFG.allocation=agreement",
                                       "SFG.finetune_iter=1/4", "SFG.transition_iter=0.1"])
    grouping = _grouping(settings)
    assert (grouping.warmup_iter, grouping.transition_iter, grouping.fixed_from) == \
        (100, 30, 100)
    settings = load(config, overrides=["TRAINING.max_iter=300", "SFG.allocation=learned",
                                       "SFG.finetune_iter=1/4", "SFG.warmup_iter=0.1"])
    grouping = _grouping(settings)
    assert (grouping.warmup_iter, grouping.fixed_from) == (30, 225)
    for unresolved, pattern in [(dict(warmup_iter=1 / 3), r"`warmup_iter` is 0\.333333, a "
                                                         r"fraction of the run"),
                                (dict(allocation="auto"), r"`allocation` is auto"),
                                (dict(warmup_iter=None), r"`warmup_iter` is None")]:
        with pytest.raises(ValueError, match=pattern + r".* `grouping\.for_run\(max_iter\)`"):
            GroupingConfig(**unresolved).sampling_share(0)


def test_a_run_keeps_the_allocation_it_started_with(load, config, tmp_path):
    """auto follows max_iter, but a run's resume or inference with another max_iter keeps
    the run's groups: from the recorded identity (no key: learned, as every run recorded
    before the agreement)."""
    from sfg_app.commands import as_trained
    from sfg_app.io.run_folder import RunFolder

    settings = load(config, overrides=["TRAINING.max_iter=3000",
                                       f"SYSTEM.model_dir={tmp_path / 'run'}"])
    assert as_trained(settings) is settings  # nothing recorded: max_iter decides
    assert _grouping(settings).allocation == "agreement"
    RunFolder(tmp_path / "run").record_identity({"NETWORK.name": "sfg_highres3dnet"})
    assert _grouping(as_trained(settings)).allocation == "learned"
    RunFolder(tmp_path / "run").record_identity({"SFG.allocation": "agreement"})
    short = load(config, overrides=["TRAINING.max_iter=20",
                                    f"SYSTEM.model_dir={tmp_path / 'run'}"])
    assert _grouping(short).allocation == "learned"
    assert _grouping(as_trained(short)).allocation == "agreement"
