"""Whether a network exported by `sfg_export` can stand in for a config's network."""

from __future__ import annotations

from sfg_app.errors import ConfigError


def check_exported_network(model, path, architecture: str, tasks: dict,
                           spatial_dims: int, image_section: str, window_size) -> None:
    """A ConfigError naming the file when the exported network in `path` cannot stand in
    for the config's: it is the `map` architecture of one task, so its head must be a
    task of `tasks` with that task's head (kind and channels), its convolutions of the
    windows' rank (`spatial_dims`, from `[image_section] spatial_window_size =
    window_size`), and `[INFERENCE] architecture` map (`sample` and `expected` need the
    grouping probabilities, which the export dropped). The input channels are checked
    against the images once they are known (`sfg_app.commands`)."""
    (task, spec), = model.head_specs.items()
    if architecture != "map":
        raise ConfigError(
            f"[INFERENCE] architecture = {architecture}, but --network {path} is the "
            f"exported map architecture of task {task!r}: it has no grouping "
            "probabilities to draw or weight architectures with. Set [INFERENCE] "
            "architecture = map (or pass --set INFERENCE.architecture=map), or infer with "
            "the full network (without --network).")
    if task not in tasks:
        raise ConfigError(
            f"--network {path} is the network of task {task!r}, which is not a task of "
            f"this config ([MULTITASK] tasks = {', '.join(tasks)}). Give the config the "
            "network was trained with, or the export of one of its tasks.")
    expected = (tasks[task].head_kind, tasks[task].head_channels)
    if (spec.kind, spec.channels) != expected:
        raise ConfigError(
            f"--network {path} has a {spec.kind} head of {spec.channels} channel(s) for "
            f"task {task!r}, but [TASK {task}] of this config needs a {expected[0]} head "
            f"of {expected[1]} channel(s). Give the config the network was trained with.")
    if model.spatial_rank != spatial_dims:
        raise ConfigError(
            f"--network {path} is a {model.spatial_rank}D network, but the windows of "
            f"[{image_section}] spatial_window_size = {tuple(window_size)} are "
            f"{spatial_dims}D. Give the config the network was trained with.")
