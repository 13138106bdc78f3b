"""Network outputs of inference windows blended back into one volume per subject and task.

The API is two calls, ``add(batch, locations)`` per batch the network produced, then
``result()``; the windows come from a plan (``GridSampler(...).plan(subject)`` or
``ResizeSampler(...).inference_plan(subject)``), whose ``batches()`` the caller runs
through the network. Blending (``blending``):

- ``crop``: every voxel comes from the centre of exactly one window (NiftyNet): the
  ``border`` of each window side is discarded. For ``labels`` the argmax is written
  straight into an integer volume, with no full-volume float buffer per class.
- ``constant`` / ``gaussian``: the weighted average of every window covering the voxel,
  weights uniform, or a Gaussian centred on the window (sigma = ``sigma_scale`` times the
  window side, as MONAI) that down-weights the borders.

Outputs (``output``): ``probabilities`` or ``values`` (blended, float32, ``(X, Y, Z, C)``)
or ``labels`` (the argmax of the blended class scores, int32, ``(X, Y, Z, 1)``; give the
aggregator probabilities). Image-level outputs (``(B, C)`` per batch) are averaged over the
windows by :class:`ImageAggregator`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sfg_app.arguments import one_of
from sfg_app.data.samplers.grid import GridPlan
from sfg_app.data.samplers.resize import ResizePlan, resize
from sfg_app.errors import ConfigError

OUTPUTS = ("labels", "probabilities", "values")
BLENDINGS = ("crop", "constant", "gaussian")


class _CropBlend:
    def __init__(self, plan: GridPlan, channels: int, labels: bool):
        self.plan, self.labels = plan, labels
        self.volume = np.zeros(plan.shape + (1 if labels else channels,),
                               np.int32 if labels else np.float32)

    def add(self, window, location):
        start, stop = self.plan.owned_box(location)
        part = window[tuple(slice(a - o, b - o) for a, b, o in zip(start, stop, location))]
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        self.volume[box] = part.argmax(axis=-1)[..., None] if self.labels else part

    def result(self):
        return self.volume


class _WeightedBlend:
    def __init__(self, plan: GridPlan, channels: int, weights: np.ndarray):
        self.weights = weights[..., None]
        self.total = np.zeros(plan.shape + (channels,), np.float32)
        self.weight = np.zeros(plan.shape + (1,), np.float32)

    def add(self, window, location):
        shape = self.total.shape[:3]
        lo = np.maximum(location[:3], 0)
        hi = np.minimum(location[3:], shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        part = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, location))
        self.total[box] += window[part] * self.weights[part]
        self.weight[box] += self.weights[part]

    def result(self):
        return self.total / self.weight


class _ResizeBlend:
    def __init__(self, plan: ResizePlan, channels: int):
        self.plan = plan
        self.window = None

    def add(self, window, location):
        self.window = window

    def result(self):
        return resize(self.window.astype(np.float32), self.plan.shape, order=1)


def window_weights(window_size: Sequence[int], blending: str, sigma_scale: float = 0.125
                   ) -> np.ndarray:
    """The ``(X, Y, Z)`` weight of each voxel of a window, uniform or Gaussian (largest 1,
    smallest clamped to 1e-6 so that every covered voxel keeps a defined average)."""
    if blending == "constant":
        return np.ones(tuple(window_size), np.float32)
    weights = np.ones((), np.float64)
    for side in window_size:
        centred = np.arange(side) - (side - 1) / 2
        axis = np.exp(-0.5 * (centred / (sigma_scale * side)) ** 2)
        weights = np.multiply.outer(weights, axis)
    return np.maximum(weights / weights.max(), 1e-6).astype(np.float32)


class _Aggregator:
    """Shape checks and window counting shared by the voxel and image aggregators."""

    def __init__(self, plan: GridPlan | ResizePlan, channels: int):
        if not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ConfigError(f"Invalid value for argument `channels`. Expected a strictly "
                              f"positive integer. Received channels={channels!r}.")
        self.plan, self.channels = plan, int(channels)
        self.expected = len(plan.locations)
        self.added = 0

    def add(self, batch, locations) -> None:
        """One batch of network outputs and the locations of its windows."""
        batch = np.asarray(batch)
        locations = np.asarray(locations, np.int64).reshape(-1, 6)
        expected = (len(locations),) + self._item_shape()
        if batch.shape != expected:
            raise ValueError(f"Expected a batch of shape {expected} (windows, "
                             f"{'spatial window, ' if len(expected) > 2 else ''}channels) "
                             f"for {len(locations)} locations. Received shape {batch.shape}.")
        for item, location in zip(batch, locations):
            self._add(item, location)
        self.added += len(locations)

    def result(self) -> np.ndarray:
        if self.added != self.expected:
            raise ValueError(f"The plan has {self.expected} windows but {self.added} were "
                             "added: run every batch of plan.batches() before result().")
        return self._result()


class VoxelAggregator(_Aggregator):
    """One task's voxel outputs of one subject's windows, blended into a volume."""

    def __init__(self, plan: GridPlan | ResizePlan, *, channels: int,
                 output: str = "values", blending: str = "gaussian",
                 sigma_scale: float = 0.125):
        super().__init__(plan, channels)
        self.output = one_of(output, "output", OUTPUTS)
        blending = one_of(blending, "blending", BLENDINGS)
        if self.output == "labels" and self.channels < 2:
            raise ConfigError("Invalid value for argument `channels`. Labels are the argmax "
                              "over class scores: expected at least 2 channels. Received "
                              f"channels={channels}.")
        if isinstance(plan, ResizePlan):
            self._blend = _ResizeBlend(plan, self.channels)
        elif blending == "crop":
            self._blend = _CropBlend(plan, self.channels, self.output == "labels")
        else:
            self._blend = _WeightedBlend(plan, self.channels,
                                         window_weights(plan.window_size, blending, sigma_scale))

    def _item_shape(self):
        return tuple(self.plan.window_size) + (self.channels,)

    def _add(self, window, location):
        self._blend.add(window, location)

    def _result(self):
        volume = self._blend.result()
        if self.output == "labels" and volume.dtype != np.int32:
            return volume.argmax(axis=-1)[..., None].astype(np.int32)
        return volume


class ImageAggregator(_Aggregator):
    """One task's image-level outputs ``(C,)``: the mean over a subject's windows."""

    def __init__(self, plan: GridPlan | ResizePlan, *, channels: int):
        super().__init__(plan, channels)
        self.total = np.zeros(self.channels, np.float64)

    def _item_shape(self):
        return (self.channels,)

    def _add(self, values, location):
        self.total += values

    def _result(self):
        return (self.total / self.added).astype(np.float32)
