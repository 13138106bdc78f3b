"""`[TASK name]` sections -> task objects and the network heads they need."""

from __future__ import annotations

from sfg_app.networks.heads import HeadSpec
from sfg_app.registry import TASKS


def build_tasks(settings) -> dict:
    """`{name: Task}` in the order of `[MULTITASK] tasks`, each built by its type."""
    return {name: TASKS.get(section.type).from_settings(
                name, section,
                image_level=settings.inputs[section.target].value_column is not None)
            for name, section in settings.tasks.items()}


def head_specs(tasks: dict) -> dict[str, HeadSpec]:
    return {name: HeadSpec(kind=task.head_kind, channels=task.head_channels)
            for name, task in tasks.items()}
