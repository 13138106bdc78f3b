"""The network of a run: `[NETWORK] name` with one head per task, and what identifies it.

Built for inputs of a number of channels its caller gives: the channels are a fact of
the images (the config's data, or the files given to `sfg_infer --input`), which the
application reads; nothing here reads a file. An SFG network (a class that declares
`is_sfg`) also takes the `[SFG]` grouping and the seed.
"""

from __future__ import annotations

import dataclasses
import functools

from sfg_app.application.tasks import head_specs
from sfg_app.layers.grouping import GroupingConfig
from sfg_app.registry import NETWORKS


#: The identity's key of an SFG network whose groups the tasks' agreement decides; a
#: record without it is of learned groups, as every run recorded before the agreement.
ALLOCATION = "SFG.allocation"


class NetworkBuilder:
    """The settings' network for `tasks`, with windows of `spatial_dims` axes of
    `window_size` (the first `spatial_dims` of its three values)."""

    def __init__(self, settings, tasks: dict, window_size, spatial_dims: int):
        self.settings = settings
        self.tasks = tasks
        self.window_size = tuple(window_size)
        self.spatial_dims = spatial_dims

    @functools.cached_property
    def network_class(self):
        return NETWORKS.get(self.settings.network.name)

    def options(self) -> dict:
        """The network constructor's keyword arguments."""
        settings, network = self.settings, self.settings.network
        options = dict(heads=head_specs(self.tasks), layer_scale=network.layer_scale,
                       activation=network.activation_function, norm_layer=network.norm_layer)
        if self.network_class.is_sfg:
            sfg = settings.sfg
            values = {field.name: getattr(sfg, field.name)
                      for field in dataclasses.fields(GroupingConfig)
                      if field.name != "fixed_from"}
            options["grouping"] = GroupingConfig(**values).for_run(
                settings.training.max_iter, sfg.finetune_iter)
            options["seed"] = settings.system.seed
        return options

    def build(self, input_channels: int):
        """The network, built (its variables exist) for inputs of `input_channels`."""
        model = self.network_class(**self.options())
        # The weights from the shapes: a forward pass at the window size would cost as
        # much as one window of inference (12 s at 96^3 on 2 cores) for nothing.
        model.build((None,) + self.window_size[:self.spatial_dims] + (input_channels,))
        return model

    def identity(self, images, input_channels: int | None) -> dict:
        """What defines the network and the meaning of its outputs, as ``{"SECTION.key":
        value}`` in config terms: a checkpoint restored into a network that differs in any
        of them gives wrong outputs, or fails after a flood of warnings. Preprocessing,
        the learning rate, schedules and inference options may change. `input_channels`
        None: not known (the config's data cannot be read)."""
        settings, network = self.settings, self.settings.network
        identity = {"NETWORK.name": network.name, "NETWORK.layer_scale": network.layer_scale,
                    "NETWORK.activation_function": network.activation_function,
                    "NETWORK.norm_layer": network.norm_layer,
                    "MULTITASK.image": list(images),
                    "input channels": input_channels,
                    "spatial dimensions (spatial_window_size)": self.spatial_dims,
                    "MULTITASK.tasks": list(self.tasks),
                    "MULTITASK.weighting": settings.multitask.weighting}
        for name, task in self.tasks.items():
            values = settings.tasks[name]
            identity[f"TASK {name}.type"] = values.type
            identity[f"TASK {name} head"] = f"{task.head_kind} x {task.head_channels}"
            for key in task.identity_keys:
                identity[f"TASK {name}.{key}"] = getattr(values, key)
        if self.network_class.is_sfg:
            identity.update({"SFG.connectivity": settings.sfg.connectivity,
                             "SFG.norm_parameters": settings.sfg.norm_parameters})
            if self.options()["grouping"].allocation == "agreement":
                identity[ALLOCATION] = "agreement"
        return identity
