"""Compact export of a trained SFG network for one task (SFG.md, "Reading and using the
learned architecture").

In ``map`` mode (every kernel in its most probable group) an SFG network is an ordinary
network with a fixed channel partition. Task t's output can depend only on the kernels
from which a path of non-zero routings reaches t's head: the head reads groups
{t, shared} (every channel with ``connectivity = dense``), a kernel of group g_out reads
the channels of the groups g_in with ``C[g_in, g_out] = 1``, and the residual units of a
stage route its channels with ``m C m^T``. ``compact_network`` computes that reachability
from the connectivity matrix and the masks (nothing is dropped with ``dense``
connectivity), and builds a plain network (grouping off) of the same plan whose stages
hold only the kept kernels and whose one head is the task's, with the weights copied so
that its output equals the SFG network's ``map`` output for the task.

keras, keras.ops and numpy only: the compact network runs on any backend.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from sfg_app.layers.grouping import connectivity_matrix
from sfg_app.networks.base import MultiTaskNetwork, SFGNetwork
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.stages import StageSpec


@keras.saving.register_keras_serializable(package="sfg_app")
class CompactNetwork(MultiTaskNetwork):
    """A plain (grouping off) network of ``plan``'s stages at explicit ``widths``, with
    its heads reading every channel: what ``compact_network`` exports for one task.

    ``plan``: a sequence of ``StageSpec`` (or their dicts, from a saved config);
    ``widths``: the kernels of each stage's conv block (and its residual units).
    """

    head_kinds = ("voxel", "image")

    def __init__(self, heads, plan, widths, **kwargs):
        super().__init__(heads, **kwargs)
        steps = tuple(step if isinstance(step, StageSpec) else StageSpec(**step)
                      for step in plan)
        widths = [int(w) for w in widths]
        if len(steps) != len(widths) or any(w < 1 for w in widths):
            raise ValueError(
                "Invalid value for argument `widths`. Expected one width >= 1 per stage "
                f"of the plan ({len(steps)} stages). Received widths={widths}.")
        self._steps = steps
        self.widths = widths
        self.stages = self._make_stages(widths=widths)
        self.task_heads = self._make_heads(grouped=False)

    @property
    def plan(self):
        return self._steps

    @property
    def input_channels(self) -> int:
        """Channels of the input it was built for: what ``sfg_infer --network`` checks
        the images against before any window is run."""
        return self.stages[0].input_channels

    @property
    def spatial_rank(self) -> int:
        """2 or 3: the spatial axes of its convolutions (2D or 3D windows)."""
        return self.stages[0].spatial_rank

    def get_config(self):
        config = super().get_config()
        config.update(plan=[dataclasses.asdict(step) for step in self._steps],
                      widths=list(self.widths))
        return config


@dataclasses.dataclass
class CompactExport:
    """What ``compact_network`` gives: the compact model and what it saves.

    ``kept``: ``{SFG layer name: indices of the kept kernels}`` in stage order;
    ``kernels_full``: ``{SFG layer name: kernels of the full network}``;
    ``flops_*``: multiply-adds per voxel of the input grid (see ``multiply_adds``);
    ``params_*``: trainable parameters (the full network: all tasks' heads, the
    grouping logits excluded).
    """

    model: CompactNetwork
    task: str
    kept: dict
    kernels_full: dict
    flops_full: float
    flops_compact: float
    params_full: int
    params_compact: int


def multiply_adds(plan, widths, in_channels: int, rank: int, head_channels,
                  kernel_size: int = 3) -> float:
    """Multiply-adds per voxel of the input grid of a stage network at ``widths``.

    A convolution costs ``kernel_size**rank * C_in * C_out`` per voxel of the grid it runs
    on, divided by ``2**rank`` for each pooling before it (so VGG is counted per input
    voxel); each head costs ``C * channels`` as a 1x1 convolution at the last stage's
    resolution (for an image head: the dense layer applied before the global average,
    the same linear map). A fused SFG convolution is ONE dense convolution with a masked
    weight, so an SFG network is counted as the dense network of its widths.
    """
    volume = kernel_size ** rank
    total, scale, previous = 0.0, 1.0, in_channels
    for step, width in zip(plan, widths):
        total += scale * volume * (previous * width + 2 * step.residual_units * width * width)
        previous = width
        if step.pool:
            scale /= 2 ** rank
    return total + scale * sum(previous * channels for channels in head_channels)


def _trainable_parameters(variables) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def _numpy(variable):
    return np.asarray(ops.convert_to_numpy(variable), np.float32)


def _closure(kept: np.ndarray, reads: np.ndarray) -> np.ndarray:
    """``kept`` (bool per kernel) grown by every kernel that a kept kernel reads through
    ``reads`` (``reads[i, j] != 0``: kernel j reads channel i), until it stops growing."""
    while True:
        grown = kept | (reads[:, kept] != 0).any(axis=1)
        if (grown == kept).all():
            return grown
        kept = grown


def kept_kernels(model: SFGNetwork, task: str) -> list[np.ndarray]:
    """Per SFG layer, the bool mask of the kernels whose ``map`` output can reach the head
    of ``task``, computed backwards from the head through the routings."""
    if task not in model.task_names:
        raise ValueError(f"Invalid value for argument `task`. Expected one of "
                         f"{model.task_names}. Received task={task!r}.")
    masks = [_numpy(g.masks("map")) for g in model.groupings]
    routing = connectivity_matrix(model.grouping.connectivity, model.num_groups)
    head = model.task_heads[model.task_names.index(task)]
    last = masks[-1]
    if head.task_index is None:
        kept = np.ones(last.shape[0], bool)
    else:
        kept = (last[:, head.task_index] + last[:, -1]) != 0
    kept_per_layer = [None] * len(masks)
    for index in range(len(masks) - 1, -1, -1):
        if model.stages[index].units:  # residual units: M = m C m^T within the stage
            kept = _closure(kept, masks[index] @ routing @ masks[index].T)
        if not kept.any():  # the deepest layer that cuts the input off the head
            raise ValueError(
                f"SFG layer {model.groupings[index].name} ({model.stages[index].name}) "
                f"keeps no kernel for task {task!r}: in the map architecture none of its "
                "kernels reaches the task's head, so the task's output does not depend "
                "on the network's input. Nothing to export for this task.")
        kept_per_layer[index] = kept
        if index > 0:  # the conv block reads the previous layer through m_prev C m^T
            reads = masks[index - 1] @ routing @ masks[index].T
            kept = (reads[:, kept] != 0).any(axis=1)
    return kept_per_layer


def compact_network(model: SFGNetwork, task: str) -> CompactExport:
    """The plain network that computes ``model``'s ``map`` output for ``task`` from only
    the kernels that can reach the task's head (see the module docstring).

    Each stage and the head copy their kept kernels into their compact twin
    (``keep_kernels`` of ``layers/blocks.py``: a convolution's kernel is
    ``(W * M)[..., kept_in, kept_out]`` with M the routing of the ``map`` masks, a
    normalisation entry is its channel's group's). ``model`` must be built. A ValueError
    names the SFG layer when one keeps no kernel.
    """
    if not isinstance(model, SFGNetwork) or not model.groupings:
        raise ValueError("Invalid value for argument `model`. Expected a built SFG network "
                         f"(SFGHighRes3DNet, SFGVGG). Received {type(model).__name__}.")
    if not model.built:
        raise ValueError("The SFG network must be built (called once) before export.")
    kept = [np.flatnonzero(k) for k in kept_kernels(model, task)]
    masks = [_numpy(g.masks("map")) for g in model.groupings]
    first = model.stages[0]
    rank, in_channels = first.spatial_rank, first.input_channels
    spec = model.head_specs[task]
    compact = CompactNetwork({task: HeadSpec(spec.kind, spec.channels)}, model.plan,
                             [len(k) for k in kept], activation=model.activation,
                             norm_layer=model.norm_layer, name=f"compact_{task}")
    compact.build((None,) * (rank + 1) + (in_channels,))
    kept_in, groups_in = np.arange(in_channels), None
    for full, small, kept_out, groups_out in zip(model.stages, compact.stages, kept, masks):
        small.keep_kernels(full, kept_in, kept_out, groups_in, groups_out)
        kept_in, groups_in = kept_out, groups_out
    compact.task_heads[0].keep_kernels(model.task_heads[model.task_names.index(task)],
                                       kept[-1], masks[-1])

    heads_full = [s.channels for s in model.head_specs.values()]
    grouping_weights = {id(w) for g in model.groupings for w in g.weights}
    full_widths = [stage.filters for stage in model.stages]
    return CompactExport(
        model=compact, task=task,
        kept={g.name: k for g, k in zip(model.groupings, kept)},
        kernels_full={g.name: w for g, w in zip(model.groupings, full_widths)},
        flops_full=multiply_adds(model.plan, full_widths, in_channels, rank, heads_full,
                                 first.kernel_size),
        flops_compact=multiply_adds(model.plan, [len(k) for k in kept], in_channels,
                                    rank, [spec.channels], first.kernel_size),
        params_full=_trainable_parameters(
            w for w in model.trainable_weights if id(w) not in grouping_weights),
        params_compact=_trainable_parameters(compact.trainable_weights))
