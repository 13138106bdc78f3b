"""Property tests: whatever a user writes, the config system answers with settings or a
ConfigError, never another exception; and settings that load survive save -> load."""

import pathlib
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from config_samples import base_config, to_ini
from sfg_app.config import (
    ConfigError, Settings, load_settings, save_settings, settings_from_dict, settings_from_text)
from sfg_app.config import schema

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SECTIONS = [*schema.FIXED_SECTIONS, "TASK organs", "TASK synth_ct", "TASK x", "MR", "LABEL",
            "CT", "BODY", "TRAINIG", "Training", "DEFAULT", "SEGMENTATION", "TASK", "task a"]
KEYS = sorted({name for section in schema.all_schemas() for name in section.keys}
              | {"max_itr", "loss_type", "MAX_ITER", "Path_To_Search"})
VALUES = ["", "0", "-1", "03", "5", "1/3", "1/0", "1e400", "nan", "true", "no", "abc",
          "(64, 64, 32)", "(1/3, 1/3, 1/3)", "(0,)", "()", "-1", "(R, A, S)", "MR, CT", "MR",
          "LABEL", "organs, synth_ct", "segmentation", "regression", "classification",
          "dice", "l1", "balanced", "weighted", "uniform", "sfg_highres3dnet", "runs/x",
          "~/x", "(", "[1, 2", "a,,b", "%(x)s", "\\", "(-10, 10)", "(0.9, 0.1)"]

names = st.sampled_from(SECTIONS) | st.text(max_size=12)
keys = st.sampled_from(KEYS) | st.text(max_size=12)
values = st.sampled_from(VALUES) | st.text(max_size=20).filter(lambda text: "\n" not in text)
soups = st.lists(st.tuples(names, st.lists(st.tuples(keys, values), max_size=6)),
                 max_size=8)


def outcome(load):
    """Settings, or the ConfigError message; anything else fails the test."""
    try:
        return load()
    except ConfigError as error:
        assert str(error)
        return None


@FAST
@given(st.text())
def test_random_text_is_settings_or_config_error(text):
    outcome(lambda: settings_from_text(text, "ini"))
    outcome(lambda: settings_from_text(text, "yaml"))


@FAST
@given(soups)
def test_random_sections_keys_and_values_in_ini(soup):
    text = "\n".join(f"[{header}]\n" + "".join(f"{key} = {value}\n" for key, value in pairs)
                     for header, pairs in soup)
    outcome(lambda: settings_from_text(text, "ini"))


objects = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                    st.lists(st.integers() | st.floats() | st.text(max_size=5), max_size=4),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@FAST
@given(st.dictionaries(names, st.dictionaries(keys, objects, max_size=5) | objects,
                       max_size=6))
def test_random_dicts_are_settings_or_config_error(data):
    outcome(lambda: settings_from_dict(data))


def _text(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value).lower() if isinstance(value, bool) else str(value)


#: (section, key, default as text) of every key of the sample config with a plain default.
DEFAULTS = [(header, spec.name, _text(spec.default))
            for header in dict.fromkeys([*schema.FIXED_SECTIONS, *base_config()])
            for spec in schema.section_schema(header).keys.values()
            if spec.default is not None and not isinstance(spec.default, schema.Derived)]

random_overrides = st.builds(lambda header, key, value: f"{header}.{key}={value}",
                             st.sampled_from(SECTIONS), st.sampled_from(KEYS), values)
# Mostly a key set to its default or to a value of the pool: many of these load.
likely_overrides = st.builds(
    lambda entry, keep, value: f"{entry[0]}.{entry[1]}={entry[2] if keep else value}",
    st.sampled_from(DEFAULTS), st.booleans(), st.sampled_from(VALUES))
overrides = st.lists(random_overrides | likely_overrides | likely_overrides, max_size=4)


@FAST
@given(overrides)
def test_overrides_of_a_valid_config_then_save_and_load(changes):
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "c.ini"
        path.write_text(to_ini(base_config()))
        loaded = outcome(lambda: load_settings(path, changes))
        if loaded is None:
            return
        assert isinstance(loaded, Settings)
        save_settings(loaded, pathlib.Path(folder) / "run" / "settings.yaml")
        assert load_settings(pathlib.Path(folder) / "run" / "settings.yaml") == loaded
