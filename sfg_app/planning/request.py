"""The minimal config that ``sfg_plan`` starts from, read and checked by the config loader.

A minimal config names the input sections (``path_to_search`` and the file filters, or
``csv_file``), ``[MULTITASK] image`` and ``tasks``, and one ``[TASK name]`` section per
task (``type`` and ``target``, ``mask`` optional). Any other key it sets is the user's
choice: the planner keeps it as written and plans around it.

The keys a complete config requires and a minimal one lacks (``[SYSTEM] model_dir``,
``[NETWORK] name``, the image sections' ``spatial_window_size``, a segmentation task's
``num_classes``) are filled with stand-ins for the check only, so that the loader reports
every other mistake with its file, line and ``[SECTION] key`` as it does for any config.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Iterable

from sfg_app.config import schema
from sfg_app.config.settings import Settings
from sfg_app.config.sources import (
    Origin, RawConfig, RawEntry, apply_overrides, read_ini, read_yaml)
from sfg_app.config.validate import build_settings
from sfg_app.errors import ConfigError

_READERS = {".ini": read_ini, ".cfg": read_ini, ".yaml": read_yaml, ".yml": read_yaml}
_STAND_IN = Origin("sfg_plan (a stand-in for a key the plan fills in)")


@dataclass(frozen=True)
class Request:
    """A minimal config: its settings (stand-ins where it lacks required keys), the
    ``(header, key)`` pairs it set itself, its path and the folder of its relative paths."""

    settings: Settings
    given: frozenset[tuple[str, str]]
    path: pathlib.Path

    def gave(self, header: str, key: str) -> bool:
        return (header, key) in self.given

    def given_value(self, header: str, key: str):
        """The typed value the minimal config set, or None."""
        return self.settings.explicit.get(header, {}).get(key) if self.gave(header, key) \
            else None


def read_request(path, overrides: Iterable[str] = ()) -> Request:
    """The minimal config at ``path`` (INI or YAML) with ``--set`` ``overrides``."""
    path = pathlib.Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: unknown config file extension {path.suffix!r}. Expected "
                          f"one of {', '.join(_READERS)}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path} (looked in "
                          f"{path.absolute().parent}).") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"Cannot read the config file {path}: {error}.") from None
    raw = reader(text, str(path), path.absolute().parent)
    apply_overrides(raw, overrides, pathlib.Path.cwd())
    given = frozenset((header, key) for header, section in raw.sections.items()
                      for key, entry in section.entries.items()
                      if entry.value is not None and str(entry.value).strip())
    _add_stand_ins(raw)
    return Request(build_settings(raw), given, path)


def _add_stand_ins(raw: RawConfig) -> None:
    """Values for the required keys a minimal config leaves to the plan."""
    def missing(header: str, key: str) -> bool:
        section = raw.sections.get(header)
        entry = section.entries.get(key) if section else None
        return entry is None or entry.value is None or not str(entry.value).strip()

    def stand_in(header: str, key: str, value: str) -> None:
        if missing(header, key):
            raw.set(header, key, RawEntry(value, _STAND_IN, pathlib.Path.cwd()))

    stand_in("SYSTEM", "model_dir", "sfg_plan_stand_in")
    stand_in("NETWORK", "name", "sfg_highres3dnet")
    multitask = raw.sections.get("MULTITASK")
    image_entry = multitask.entries.get("image") if multitask else None
    images = _names(image_entry.value) if image_entry is not None else []
    windows = [raw.sections[name].entries["spatial_window_size"].value for name in images
               if name in raw.sections and not missing(name, "spatial_window_size")]
    for name in images:
        if name in raw.sections:
            stand_in(name, "spatial_window_size", windows[0] if windows else "(1, 1, 1)")
    for header in [h for h in raw.sections if h.startswith("TASK ")]:
        type_entry = raw.sections[header].entries.get("type")
        task_type = schema.task_type(str(type_entry.value).strip()) if type_entry else None
        for spec in getattr(task_type, "keys", ()):
            if spec.required and spec.name == "num_classes":
                stand_in(header, spec.name, "2")


def _names(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(item).strip() for item in value]
    return [item.strip() for item in str(value).strip("()[] ").split(",") if item.strip()]
