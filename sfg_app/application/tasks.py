"""`[TASK name]` sections -> task objects and the network heads they need."""

from __future__ import annotations

from sfg_app.networks.heads import HeadSpec
from sfg_app.registry import TASKS

# The keys of a [TASK] section that every task type takes, beside its own.
_COMMON = ("loss", "weight", "mask", "optional_target", "output_interp_order",
           "save_probabilities")


def build_tasks(settings) -> dict:
    """`{name: Task}` in the order of `[MULTITASK] tasks`."""
    tasks = {}
    for name, section in settings.tasks.items():
        task_class = TASKS.get(section.type)
        options = {key: getattr(section, key) for key in _COMMON
                   if getattr(section, key, None) is not None}
        if section.type in ("segmentation", "classification"):
            options["num_classes"] = section.num_classes
        if section.type == "regression":
            image_level = settings.inputs[section.target].value_column is not None
            options.update(out_channels=section.out_channels,
                           head_kind="image" if image_level else "voxel",
                           target_shift=section.target_shift,
                           target_scale=section.target_scale,
                           huber_delta=section.huber_delta)
        tasks[name] = task_class(name, section.target, **options)
    return tasks


def head_specs(tasks: dict) -> dict[str, HeadSpec]:
    return {name: HeadSpec(kind=task.head_kind, channels=task.head_channels)
            for name, task in tasks.items()}
