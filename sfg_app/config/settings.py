"""The typed, read-only settings of a run: one frozen dataclass per kind of section.

The dataclasses are generated from the schema, so a key declared there is an attribute
here with no second declaration to keep in step.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Mapping

from sfg_app.config import schema
from sfg_app.errors import ConfigError


def _section_class(section: schema.SectionSchema, class_name: str) -> type:
    return make_dataclass(class_name, list(section.keys), frozen=True,
                          namespace={"__doc__": section.doc})


SystemSettings = _section_class(schema.SYSTEM, "SystemSettings")
NetworkSettings = _section_class(schema.NETWORK, "NetworkSettings")
SFGSettings = _section_class(schema.SFG, "SFGSettings")
MultitaskSettings = _section_class(schema.MULTITASK, "MultitaskSettings")
TrainingSettings = _section_class(schema.TRAINING, "TrainingSettings")
InferenceSettings = _section_class(schema.INFERENCE, "InferenceSettings")
EvaluationSettings = _section_class(schema.EVALUATION, "EvaluationSettings")
InputSettings = _section_class(schema.INPUT, "InputSettings")

@functools.lru_cache(maxsize=64)
def _task_class(section: schema.SectionSchema) -> type:
    return _section_class(section, "TaskSettings")


def task_settings(values: Mapping[str, Any]):
    """The settings of a `[TASK]` section: the common keys and its type's own."""
    return _task_class(schema.task_schema(values["type"]))(**values)


#: Attribute of ``Settings`` and class of each fixed section.
FIXED_ATTRIBUTES = {
    "SYSTEM": ("system", SystemSettings),
    "NETWORK": ("network", NetworkSettings),
    "SFG": ("sfg", SFGSettings),
    "MULTITASK": ("multitask", MultitaskSettings),
    "TRAINING": ("training", TrainingSettings),
    "INFERENCE": ("inference", InferenceSettings),
    "EVALUATION": ("evaluation", EvaluationSettings),
}


def _plain(section_schema: schema.SectionSchema, values) -> dict[str, Any]:
    return {name: None if getattr(values, name) is None
            else spec.type.to_plain(getattr(values, name))
            for name, spec in section_schema.keys.items()}


@dataclass(frozen=True, eq=False)
class Settings:
    """Every section of a config, typed, with all defaults filled in.

    ``inputs`` keeps the file's order; ``tasks`` the order of ``[MULTITASK] tasks``.
    Two settings are equal when their ``to_dict()`` are, whatever file they came from.
    """

    system: Any
    network: Any
    sfg: Any
    multitask: Any
    training: Any
    inference: Any
    evaluation: Any
    inputs: Mapping[str, Any]
    tasks: Mapping[str, Any]
    source: str
    explicit: Mapping[str, Mapping[str, Any]] = field(repr=False)
    """The values the config set, typed; ``replace`` re-derives the defaults from them."""

    def __post_init__(self):
        object.__setattr__(self, "inputs", types.MappingProxyType(dict(self.inputs)))
        object.__setattr__(self, "tasks", types.MappingProxyType(dict(self.tasks)))

    def section(self, header: str):
        """The section written ``[header]`` in a config: fixed, ``TASK name`` or input."""
        if header in FIXED_ATTRIBUTES:
            return getattr(self, FIXED_ATTRIBUTES[header][0])
        if header.startswith("TASK ") and header[5:] in self.tasks:
            return self.tasks[header[5:]]
        if header in self.inputs:
            return self.inputs[header]
        raise ConfigError(f"The settings have no section [{header}].")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain values keyed by INI section names: every key of every section."""
        data = {title: _plain(schema.FIXED_SECTIONS[title], getattr(self, attribute))
                for title, (attribute, _) in FIXED_ATTRIBUTES.items()}
        data.update({name: _plain(schema.INPUT, values) for name, values in
                     self.inputs.items()})
        data.update({f"TASK {name}": _plain(schema.task_schema(values.type), values)
                     for name, values in self.tasks.items()})
        return data

    def __eq__(self, other) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None
