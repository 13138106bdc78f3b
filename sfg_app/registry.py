"""Config names -> classes and functions, for built-ins and plugins alike.

A config only ever names an entry ("sfg_highres3dnet", "balanced", "dice_ce"); it never
holds an import path, so reading a config cannot import or run code the user did not
install. Built-in entries are declared here as "module:attribute" strings and imported
only when looked up, so listing names (for validation and ``--help-config``) stays cheap
and does not import TensorFlow. Third-party packages add entries through the Python
entry-point group ``sfg_app.<kind>s`` (for example ``sfg_app.networks``) in their own
packaging metadata; a plugin's name may not shadow a built-in one.
"""

from __future__ import annotations

import difflib
import importlib
from importlib import metadata

from sfg_app.errors import ConfigError


class Registry:
    """Names of one kind (networks, samplers, ...) and where their objects live."""

    def __init__(self, kind: str, builtins: dict[str, str], group: str | None = None):
        self.kind = kind
        self.group = group or f"sfg_app.{kind}s"
        self._builtins = dict(builtins)
        self._plugins: dict[str, metadata.EntryPoint] | None = None

    def _plugin_entry_points(self) -> dict[str, metadata.EntryPoint]:
        if self._plugins is None:
            found = {}
            for ep in metadata.entry_points(group=self.group):
                if ep.name in self._builtins:
                    raise ConfigError(
                        f"The plugin entry point {ep.value!r} in group {self.group!r} "
                        f"registers the {self.kind} name {ep.name!r}, which is built in. "
                        "Rename the plugin's entry point.")
                found[ep.name] = ep
            self._plugins = found
        return self._plugins

    def names(self) -> list[str]:
        """Every registered name, built-ins first, then plugins, each sorted."""
        return sorted(self._builtins) + sorted(self._plugin_entry_points())

    def __contains__(self, name: str) -> bool:
        return name in self._builtins or name in self._plugin_entry_points()

    def get(self, name: str):
        """The object registered as ``name``; a ConfigError with suggestions otherwise."""
        if name in self._builtins:
            module_name, _, attribute = self._builtins[name].partition(":")
            return getattr(importlib.import_module(module_name), attribute)
        plugins = self._plugin_entry_points()
        if name in plugins:
            return plugins[name].load()
        raise ConfigError(self.unknown_name_message(name))

    def unknown_name_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return (f"Unknown {self.kind} {name!r}.{hint} Registered {self.kind}s: "
                f"{', '.join(names)}.")


NETWORKS = Registry("network", {
    "sfg_highres3dnet": "sfg_app.networks.highres3dnet:SFGHighRes3DNet",
    "highres3dnet": "sfg_app.networks.highres3dnet:HighRes3DNet",
    "hard_shared": "sfg_app.networks.hard_shared:HardSharedHighRes3DNet",
    "cross_stitch": "sfg_app.networks.cross_stitch:CrossStitchHighRes3DNet",
    "sfg_vgg": "sfg_app.networks.vgg:SFGVGG",
})

LOADERS = Registry("loader", {
    "nibabel": "sfg_app.io.readers:NibabelReader",
    "simpleitk": "sfg_app.io.readers:SimpleITKReader",
})

SAMPLERS = Registry("sampler", {
    "uniform": "sfg_app.data.samplers.uniform:UniformSampler",
    "weighted": "sfg_app.data.samplers.weighted:WeightedSampler",
    "balanced": "sfg_app.data.samplers.balanced:BalancedSampler",
    "resize": "sfg_app.data.samplers.resize:ResizeSampler",
})

LOSSES = Registry("loss", {
    "ce": "sfg_app.tasks.losses:cross_entropy",
    "dice": "sfg_app.tasks.losses:dice",
    "dice_ce": "sfg_app.tasks.losses:dice_cross_entropy",
    "generalised_dice": "sfg_app.tasks.losses:generalised_dice",
    "l1": "sfg_app.tasks.losses:l1",
    "l2": "sfg_app.tasks.losses:l2",
    "huber": "sfg_app.tasks.losses:huber",
})

OPTIMISERS = Registry("optimiser", {
    "adam": "sfg_app.application.optimisers:adam",
    "adamw": "sfg_app.application.optimisers:adamw",
    "sgd": "sfg_app.application.optimisers:sgd",
    "momentum": "sfg_app.application.optimisers:momentum",
    "rmsprop": "sfg_app.application.optimisers:rmsprop",
})

TASKS = Registry("task type", group="sfg_app.task_types", builtins={
    "segmentation": "sfg_app.tasks.segmentation:SegmentationTask",
    "regression": "sfg_app.tasks.regression:RegressionTask",
    "classification": "sfg_app.tasks.classification:ClassificationTask",
})

APPLICATIONS = Registry("application", {
    "multitask": "sfg_app.application.multitask:MultiTaskApplication",
})
