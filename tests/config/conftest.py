"""Fixtures: an editable valid config and a loader that goes through a real INI file."""

from __future__ import annotations

import pytest

from config_samples import base_config, to_ini
from sfg_app.config import load_settings


@pytest.fixture
def config():
    """A fresh, editable copy of the valid config: {section: {key: text}}."""
    return base_config()


@pytest.fixture
def load(tmp_path):
    """Writes a config (dict or INI text) to tmp_path/cfg/c.ini and loads it."""

    def load_(config, overrides=(), name="c.ini"):
        text = config if isinstance(config, str) else to_ini(config)
        path = tmp_path / "cfg" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return load_settings(path, overrides)

    return load_
