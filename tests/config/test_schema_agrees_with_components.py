"""The config and the components it builds agree on what is valid: a value that passes
the config is accepted by the component, and one the component refuses is refused when
the config is loaded, with the place (file and line, or the --set override) in the
message, never later when the network is built."""

import dataclasses
import re

import pytest

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
    "warmup_iter": ["0", "10", "-1"],
}


def _grouping(settings) -> GroupingConfig:
    """As the application builds it from the settings."""
    names = {field.name for field in dataclasses.fields(GroupingConfig)} - {"fixed_from"}
    grouping = GroupingConfig(**{name: getattr(settings.sfg, name) for name in names})
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
