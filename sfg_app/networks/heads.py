"""What a network must output for each task: ``HeadSpec(kind, channels)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sfg_app.errors import ConfigError
from sfg_app import arguments
from sfg_app.layers.blocks import HEAD_KINDS


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """``voxel``: ``(B, *spatial, channels)`` (segmentation logits, regressed values);
    ``image``: ``(B, channels)`` (classification logits, scalar regression)."""

    kind: str = "voxel"
    channels: int = 1

    def __post_init__(self):
        arguments.one_of(self.kind, "kind", HEAD_KINDS)
        arguments.positive_int(self.channels, "channels")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_heads(heads) -> dict[str, HeadSpec]:
    """``{task: HeadSpec}`` in the given order; dicts (from a saved config) are accepted."""
    if not isinstance(heads, Mapping) or not heads:
        raise ConfigError("Invalid value for argument `heads`. Expected a non-empty "
                          f"mapping of task name to HeadSpec. Received heads={heads!r}.")
    checked = {}
    for task, spec in heads.items():
        if not isinstance(task, str) or not task:
            raise ConfigError("Invalid value for argument `heads`. Expected task names "
                              f"as non-empty strings. Received the key {task!r}.")
        if isinstance(spec, Mapping):
            spec = HeadSpec(**spec)
        if not isinstance(spec, HeadSpec):
            raise ConfigError(f"Invalid value for argument `heads`. Expected a HeadSpec "
                              f"for task {task!r}. Received {spec!r}.")
        checked[task] = spec
    return checked
