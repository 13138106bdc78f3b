"""Reading configs into raw text values: INI files, YAML files, dicts and ``--set`` overrides.

Nothing here knows the schema. Every value keeps where it came from (file and line, or the
override) and the folder its relative paths are taken from, so that later checks can
name both. Every configparser or YAML exception becomes a ConfigError naming the file.
"""

from __future__ import annotations

import configparser
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from sfg_app.errors import ConfigError


@dataclass(frozen=True)
class Origin:
    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}, line {self.line}" if self.line else self.source


@dataclass
class RawEntry:
    """A value as written: text, a list of texts, None (unset) or a Python object."""

    value: Any
    origin: Origin
    base_dir: pathlib.Path


@dataclass
class RawSection:
    header: str
    origin: Origin
    entries: dict[str, RawEntry] = field(default_factory=dict)


_TASK_HEADER = re.compile(r"TASK\s+(.*\S)\s*")


def canonical_header(header: str) -> str:
    """Outer spaces dropped and ``[TASK   name]`` written ``[TASK name]``."""
    header = header.strip()
    task = _TASK_HEADER.fullmatch(header)
    return f"TASK {task.group(1)}" if task else header


class RawConfig:
    """Sections in the order they first appear; keys lower-cased."""

    def __init__(self, source: str):
        self.source = source
        self.sections: dict[str, RawSection] = {}

    def add_section(self, header: str, origin: Origin) -> RawSection:
        header = canonical_header(header)
        if header in self.sections:
            raise ConfigError(f"{origin}: duplicate section [{header}] (first at "
                              f"{self.sections[header].origin}). Merge the two sections.")
        self.sections[header] = RawSection(header, origin)
        return self.sections[header]

    def set(self, header: str, key: str, entry: RawEntry) -> None:
        """Set one value, adding its section when missing (overrides do this)."""
        header = canonical_header(header)
        section = self.sections.get(header) or self.add_section(header, entry.origin)
        section.entries[key.strip().lower()] = entry

    def add_entry(self, section: RawSection, key: str, entry: RawEntry) -> None:
        key = key.strip().lower()
        if key in section.entries:
            raise ConfigError(f"{entry.origin}: duplicate key {key!r} in [{section.header}] "
                              f"(first at {section.entries[key].origin}). Keep one of them.")
        section.entries[key] = entry


# ---------------------------------------------------------------------------- INI

def _ini_parser() -> configparser.ConfigParser:
    # The default section is renamed to a header no file can write, so that a [DEFAULT]
    # section is an ordinary (and rejected) section instead of keys valid everywhere.
    return configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), strict=True,
        empty_lines_in_values=False, default_section="\n")


def _ini_lines(text: str, parser: configparser.ConfigParser) -> dict[tuple[str, str], int]:
    """Line of each section header (key "") and each key, as configparser reads them."""
    lines: dict[tuple[str, str], int] = {}
    header = None
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = re.split(r"\s[;#]", line, maxsplit=1)[0].strip()
        if not stripped or stripped[0] in "#;" or line[:1].isspace():
            continue
        match = parser.SECTCRE.match(stripped)
        if match:
            header = canonical_header(match.group("header"))
            lines.setdefault((header, ""), number)
        elif header is not None:
            name = re.split(r"[=:]", stripped, maxsplit=1)[0]
            lines.setdefault((header, parser.optionxform(name.strip())), number)
    return lines


def _describe_ini_error(error: configparser.Error, lines: list[str]) -> str:
    if isinstance(error, configparser.MissingSectionHeaderError):
        return (f"line {error.lineno}: a key comes before any [SECTION] header: "
                f"{error.line.strip()!r}. Start the file with a section such as [SYSTEM].")
    if isinstance(error, configparser.DuplicateSectionError):
        return (f"line {error.lineno}: duplicate section [{error.section}]. "
                "Merge the two sections.")
    if isinstance(error, configparser.DuplicateOptionError):
        return (f"line {error.lineno}: duplicate key {error.option!r} in "
                f"[{error.section}]. Keep one of them.")
    if isinstance(error, configparser.ParsingError):
        bad = "; ".join(f"line {number}: {lines[number - 1].strip()!r}"
                        for number, _ in error.errors)
        return (f"cannot parse {bad}. Each line must be a [SECTION] header, "
                "`key = value`, a comment or blank.")
    return str(error)


def read_ini(text: str, source: str, base_dir: pathlib.Path) -> RawConfig:
    parser = _ini_parser()
    try:
        parser.read_string(text, source=source)
    except configparser.Error as error:
        reason = _describe_ini_error(error, text.split("\n"))
        raise ConfigError(f"{source}: {reason}") from None
    lines = _ini_lines(text, parser)
    raw = RawConfig(source)
    for header in parser.sections():
        origin = Origin(source, lines.get((canonical_header(header), "")))
        section = raw.add_section(header, origin)
        for key, value in parser.items(header, raw=True):
            origin = Origin(source, lines.get((section.header, key)))
            raw.add_entry(section, key, RawEntry(value, origin, base_dir))
    return raw


# --------------------------------------------------------------------------- YAML

_NULL = "tag:yaml.org,2002:null"


def _yaml_value(node: yaml.Node, source: str) -> Any:
    """A scalar's text (typed later, exactly as INI text), None, or a list of texts."""
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == _NULL else node.value
    if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.ScalarNode) for item in node.value):
        return [_yaml_value(item, source) for item in node.value]
    raise ConfigError(f"{source}, line {node.start_mark.line + 1}: a value must be a "
                      "scalar or a flat list such as [64, 64, 32].")


def _yaml_pairs(node: yaml.Node, source: str, what: str):
    """(key text, key line, value node) of a mapping node whose keys are scalars."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{source}, line {node.start_mark.line + 1}: {what} must be a "
                          "mapping of names to values.")
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(f"{source}, line {key_node.start_mark.line + 1}: a name must "
                              "be a plain word.")
        yield key_node.value, key_node.start_mark.line + 1, value_node


def read_yaml(text: str, source: str, base_dir: pathlib.Path) -> RawConfig:
    """Walks the composed node tree, so no YAML tag can construct an object."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deep for a config (a config is "
                          "sections of keys, each a value or a flat list).") from None
    raw = RawConfig(source)
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL):
        return raw
    for header, line, body in _yaml_pairs(root, source, "the top level"):
        section = raw.add_section(header, Origin(source, line))
        if isinstance(body, yaml.ScalarNode) and body.tag == _NULL:
            continue
        for key, key_line, value in _yaml_pairs(body, source, f"section {header!r}"):
            origin = Origin(source, key_line)
            raw.add_entry(section, key, RawEntry(_yaml_value(value, source), origin, base_dir))
    return raw


# ----------------------------------------------------------------- dicts, overrides

def read_dict(data: Mapping, source: str, base_dir: pathlib.Path) -> RawConfig:
    """Sections keyed by INI header, values as Python objects (or text)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: settings must be a mapping of section names to "
                          f"mappings of keys; received {type(data).__name__}.")
    raw = RawConfig(source)
    for header, body in data.items():
        if not isinstance(header, str):
            raise ConfigError(f"{source}: section names must be strings; received "
                              f"{header!r}.")
        section = raw.add_section(header, Origin(source))
        if body is None:
            continue
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: section [{header}] must be a mapping of keys to "
                              f"values; received {type(body).__name__}.")
        for key, value in body.items():
            if not isinstance(key, str):
                raise ConfigError(f"{source}: keys of [{header}] must be strings; received "
                                  f"{key!r}.")
            raw.add_entry(section, key, RawEntry(value, Origin(source), base_dir))
    return raw


def parse_override(text: str) -> tuple[str, str, str]:
    """``SECTION.key=value`` split at the first ``=``, then at the last ``.`` before it."""
    target, equals, value = text.partition("=")
    header, dot, key = target.rpartition(".")
    if not equals or not dot or not header.strip() or not key.strip():
        raise ConfigError(f"--set {text}: expected SECTION.key=value, for example "
                          "TRAINING.max_iter=50 or \"TASK organs.loss=dice\".")
    return header.strip(), key.strip(), value


def apply_overrides(raw: RawConfig, overrides: Iterable[str], base_dir: pathlib.Path) -> None:
    """Each override replaces or adds one value; its relative paths start at ``base_dir``."""
    for text in overrides:
        header, key, value = parse_override(text)
        raw.set(header, key, RawEntry(value, Origin(f"--set {text}"), base_dir))
