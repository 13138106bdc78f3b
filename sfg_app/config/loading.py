"""Entry points: settings from a file, a string or a dict; settings saved as YAML."""

from __future__ import annotations

import os
import pathlib
from typing import Iterable, Mapping

import yaml

from sfg_app.config.schema import CONFIG_VERSION
from sfg_app.config.settings import Settings
from sfg_app.config.sources import apply_overrides, read_dict, read_ini, read_yaml
from sfg_app.config.validate import build_settings
from sfg_app.errors import ConfigError

_READERS = {"ini": read_ini, "yaml": read_yaml}
_SYNTAX_OF_EXTENSION = {".ini": "ini", ".cfg": "ini", ".yaml": "yaml", ".yml": "yaml"}


def settings_from_text(text: str, syntax: str = "ini", source: str = "<string>",
                       base_dir: str | os.PathLike | None = None,
                       overrides: Iterable[str] = ()) -> Settings:
    """Settings from config text; ``syntax`` is ``ini`` or ``yaml``.

    Relative paths in the text start at ``base_dir`` (default: the current folder); those
    of ``overrides`` (``SECTION.key=value``) at the current folder.
    """
    reader = _READERS.get(syntax)
    if reader is None:
        raise ConfigError(f"Unknown config syntax {syntax!r}: expected ini or yaml.")
    base = pathlib.Path(base_dir) if base_dir is not None else pathlib.Path.cwd()
    raw = reader(text, source, base.absolute())
    apply_overrides(raw, overrides, pathlib.Path.cwd())
    return build_settings(raw)


#: Larger than any real config; a bigger file is another kind of file given by mistake.
MAX_CONFIG_BYTES = 1 << 20


def load_settings(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Settings:
    """Settings from an INI (.ini, .cfg) or YAML (.yaml, .yml) file, then the overrides."""
    path = pathlib.Path(path)
    syntax = _SYNTAX_OF_EXTENSION.get(path.suffix.lower())
    if syntax is None:
        raise ConfigError(f"{path}: unknown config file extension {path.suffix!r}. Expected "
                          f"one of {', '.join(_SYNTAX_OF_EXTENSION)}.")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: not a regular file (a folder, a pipe or a device); "
                          "give the path of a config file.")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config file is at "
                              f"most {MAX_CONFIG_BYTES} bytes. Is it the right file?")
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path} (looked in "
                          f"{path.absolute().parent}).") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte "
                          f"{error.start}).") from None
    except OSError as error:
        raise ConfigError(f"Cannot read the config file {path}: {error.strerror}.") from None
    return settings_from_text(text, syntax, str(path), path.absolute().parent, overrides)


def settings_from_dict(data: Mapping, source: str = "<dict>",
                       base_dir: str | os.PathLike | None = None) -> Settings:
    """Settings from a dict keyed by INI section names ("SYSTEM", "MR", "TASK organs").

    Values may be Python objects (``50``, ``(64, 64, 32)``, paths) or config text
    (``"50"``, ``"(64, 64, 32)"``); None leaves a key unset.
    """
    base = pathlib.Path(base_dir) if base_dir is not None else pathlib.Path.cwd()
    return build_settings(read_dict(data, source, base.absolute()))


class _Dumper(yaml.SafeDumper):
    """Sections and keys one per line; tuples and lists on one line, as in an INI file."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def settings_text(settings: Settings) -> str:
    """Every resolved value as the YAML text that `save_settings` writes."""
    header = (f"# Settings of an sfg run, resolved from {settings.source} (config format "
              f"version {CONFIG_VERSION}).\n# Every key is listed by `sfg_train "
              "--help-config`.\n")
    return header + yaml.dump(settings.to_dict(), Dumper=_Dumper, sort_keys=False,
                              default_flow_style=False, allow_unicode=True)


def save_settings(settings: Settings, path: str | os.PathLike) -> None:
    """Writes every resolved value as YAML; loading the file gives equal settings.

    The file is written under a temporary name in the same folder, then renamed, so a
    reader never sees half of it.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = settings_text(settings)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
