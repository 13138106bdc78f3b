"""Typed settings from INI or YAML configs, checked against one schema (``schema.py``).

    settings = load_settings("c.ini", overrides=["TRAINING.max_iter=50"])
    settings.training.max_iter, settings.inputs["MR"].spatial_window_size
    save_settings(settings, "resolved.yaml")
"""

from sfg_app.config.loading import (
    load_settings, save_settings, settings_from_dict, settings_from_text, settings_text)
from sfg_app.config.reference import reference_markdown, reference_text
from sfg_app.config.schema import CONFIG_VERSION
from sfg_app.config.settings import Settings
from sfg_app.errors import ConfigError

__all__ = ["CONFIG_VERSION", "ConfigError", "Settings", "load_settings", "reference_markdown",
           "reference_text", "save_settings", "settings_from_dict", "settings_from_text",
           "settings_text"]
