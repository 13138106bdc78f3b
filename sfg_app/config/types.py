"""The two value types that tie a config key to the rest of sfg.

``Registered``: a name in one of ``sfg_app.registry``'s tables. ``checked_argument``: a
key's own type applied to a component's argument, for the components whose arguments
are config keys. The plain value types, and ``Key`` itself, are ``sfg_app.keys``'s: task
types declare their keys with them without importing the config system.
"""

from __future__ import annotations

import pathlib
from typing import Any

from sfg_app import arguments
from sfg_app.keys import Bool, Bounded, Invalid, Tuple, ValueType
from sfg_app.registry import Registry


def checked_argument(value_type: ValueType, value: Any, name: str, owner: str = "") -> Any:
    """``value``, a Python object, converted by ``value_type``; a ConfigError in Keras'
    form naming the argument otherwise. For the components whose arguments are config
    keys (the grouping layers take the ``[SFG]`` keys): they check each value against the
    key's own type, so the component and the config accept the same values."""
    if isinstance(value, str) and isinstance(value_type, (Bounded, Bool, Tuple)):
        # Text is a config's spelling ("yes", "0.5"); an argument is a Python value.
        raise arguments.invalid(name, value, value_type.expected, owner=owner)
    try:
        return value_type.convert(value, pathlib.Path.cwd())
    except Invalid as error:
        raise arguments.invalid(name, value, value_type.expected, error.hint, owner) from None


class Registered(ValueType):
    """A name in one of ``sfg_app.registry``'s tables (built in or from a plugin)."""

    def __init__(self, registry: Registry, extra: tuple[str, ...] = ()):
        self.registry = registry
        self.extra = extra
        self.expected = " or ".join((*extra, f"a registered {registry.kind} name"))

    @property
    def reference(self) -> str:
        return f"{self.expected}: {', '.join(self.extra + tuple(self.registry.names()))}"

    def parse(self, text, base_dir):
        if text in self.extra or text in self.registry:
            return text
        raise Invalid(self.registry.unknown_name_message(text))
