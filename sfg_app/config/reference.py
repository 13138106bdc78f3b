"""The reference of every key, generated from the schema: ``--help-config`` and the docs."""

from __future__ import annotations

import textwrap

from sfg_app.config import schema
from sfg_app.keys import Key

INTRODUCTION = f"""\
Configs are INI files laid out as NiftyNet's, or YAML files with the same sections and
keys (config format version {schema.CONFIG_VERSION}). The fixed sections are
{", ".join(schema.FIXED_SECTIONS)};
one [TASK name] section describes each task; every other section is an input, named with
letters, digits, _ and -. Section names are case-sensitive, keys are not. Unknown
sections and keys are errors.

Values: integers (03 is 3); numbers (0.5, 1e-3, 1/3); booleans (true/false, yes/no,
on/off, 1/0); tuples such as (64, 64, 32); lists such as `image = MR, CT`. An empty
value leaves a key at its default. `;` and `#` after a space start a comment. Relative
paths start at the config file's folder. Any key can be set on the command line:
`--set SECTION.key=value`, e.g. `--set TRAINING.max_iter=50` or
`--set "TASK organs.loss=dice"` (relative paths there start at the current folder).
G is the number of tasks + 1 (the shared group)."""

_KINDS = {
    "image": "image sections (not with value_column)",
    "search": "sections with path_to_search",
    "csv": "sections with csv_file",
    "weighted": "the weighted and balanced samplers",
}


def _heading(spec: Key, code: str = "") -> str:
    """``name = default``, or the name and (required), (optional) or (default: how)."""
    name, value = f"{code}{spec.name}{code}", spec.default
    if spec.required:
        return f"{name} (required)"
    if value is None:
        return f"{name} (optional)"
    if isinstance(value, schema.Derived):
        return f"{name} (default: {value})"
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, tuple):
        value = "(" + ", ".join(map(str, value)) + ")"
    return f"{name} = {code}{value}{code}"


def _scope(spec: Key) -> str:
    if spec.applies_to is None:
        return ""
    for kind, text in _KINDS.items():
        if kind in spec.applies_to:
            return f" Only for {text}."
    kinds = sorted(spec.applies_to)
    listed = ", ".join(kinds[:-1]) + " and " + kinds[-1] if len(kinds) > 1 else kinds[0]
    return f" Only for {listed} tasks."


def _described(spec: Key) -> str:
    return f"{spec.doc}{_scope(spec)} Expected {spec.type.reference}."


def _wrap(text: str, indent: str = "") -> list[str]:
    """Wrapped lines that never break between a comparison and its number."""
    protected = text.replace(">= ", ">=\x00").replace("<= ", "<=\x00").replace(
        "> ", ">\x00").replace("< ", "<\x00")
    return [line.replace("\x00", " ") for line in textwrap.wrap(
        protected, 88, initial_indent=indent, subsequent_indent=indent,
        break_on_hyphens=False)]


def reference_text() -> str:
    """Plain text for a terminal (``--help-config``)."""
    lines = ["sfg configuration reference", "", INTRODUCTION]
    for section in schema.all_schemas():
        lines += ["", f"[{section.title}]", *_wrap(section.doc), ""]
        for spec in section.keys.values():
            lines.append(f"  {_heading(spec)}")
            lines += _wrap(_described(spec), "      ")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """Markdown of the same content (``docs/config_reference.md``)."""
    lines = ["# Configuration reference", "",
             "Generated from `sfg_app/config/schema.py` by "
             "`python scripts/make_config_reference.py`; do not edit by hand. The same text "
             "is printed by `sfg_train --help-config`.", "", INTRODUCTION]
    for section in schema.all_schemas():
        lines += ["", f"## [{_escape(section.title)}]", "", _escape(section.doc), ""]
        for spec in section.keys.values():
            lines.append(_escape(f"- {_heading(spec, '`')}: {_described(spec)}"))
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    """``<model_dir>`` and ``<input>`` are not HTML tags (no code span holds a ``<``)."""
    return text.replace("<", "\\<")
