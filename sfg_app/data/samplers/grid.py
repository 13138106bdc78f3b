"""Inference windows that tile a volume, overlapping by twice the border.

``border`` is NiftyNet's: the margin of each side of a window's output that is discarded
(``crop`` blending) or down-weighted (``gaussian``); neighbouring windows overlap by
``2 * border`` (TorchIO's ``patch_overlap``). The first window starts at ``-border``, so
that the kept centre of the windows covers the volume from its first voxel; the last
window is moved back so that its centre ends with the volume; voxels outside the volume
read as zero. A volume smaller than the window gets one window along that axis.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sfg_app.data.samplers.base import (crop, locations_from_starts, spatial_shape,
                                        standardize_border, standardize_window_size)


class GridSampler:
    """Plans the windows of one volume; see :class:`GridPlan`."""

    def __init__(self, spatial_window_size: Sequence[int], border: Sequence[int] = (0, 0, 0)):
        self.window_size = standardize_window_size(spatial_window_size)
        self.border = standardize_border(border, self.window_size)

    def plan(self, subject_or_shape: Mapping[str, np.ndarray] | Sequence[int]) -> "GridPlan":
        """The grid over a subject's volumes (checked to share a shape) or a shape."""
        if isinstance(subject_or_shape, Mapping):
            shape = spatial_shape(subject_or_shape)
        else:
            shape = tuple(int(s) for s in subject_or_shape)
        starts = tuple(_axis_starts(s, w, b)
                       for s, w, b in zip(shape, self.window_size, self.border))
        return GridPlan(shape, self.window_size, self.border, starts)


def _axis_starts(size: int, window: int, border: int) -> np.ndarray:
    step = window - 2 * border
    count = max(-(-size // step), 1)
    starts = -border + step * np.arange(count)
    if count > 1:  # the last centre ends with the volume rather than past it
        starts[-1] = size + border - window
    return starts


@dataclass(frozen=True)
class GridPlan:
    """The windows of one volume: per-axis starts whose product is the grid.

    ``owned_box`` gives, for crop blending, the part of the volume a window writes:
    the boxes of all windows partition the volume, each inside its window's centre
    (where centres overlap, at the last window, the overlap is split at its middle).
    """

    shape: tuple[int, int, int]
    window_size: tuple[int, int, int]
    border: tuple[int, int, int]
    starts: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def locations(self) -> np.ndarray:
        grid = np.meshgrid(*self.starts, indexing="ij")
        return locations_from_starts(np.stack([g.ravel() for g in grid], axis=1),
                                     self.window_size)

    def owned_box(self, location: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(start, stop)`` in the volume of the voxels this window's output provides."""
        start, stop = np.empty(3, np.int64), np.empty(3, np.int64)
        for axis, (starts, size, window) in enumerate(zip(self.starts, self.shape,
                                                          self.window_size)):
            k = int(np.searchsorted(starts, location[axis]))
            if k >= starts.size or starts[k] != location[axis]:
                raise ValueError(f"Location {list(location)} is not a window of this grid "
                                 f"(starts along axis {axis}: {starts.tolist()}).")
            bounds = np.concatenate([[0], (starts[:-1] + starts[1:] + window) // 2, [size]])
            start[axis], stop[axis] = bounds[k], bounds[k + 1]
        return start, stop

    def batches(self, arrays: Mapping[str, np.ndarray], batch_size: int
                ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """``({section: (B, X, Y, Z, C)}, locations (B, 6))`` over the grid, in order; the
        last batch may be smaller. Volumes only: per-subject values are left out."""
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"Invalid value for argument `batch_size`. Expected a strictly "
                             f"positive integer. Received batch_size={batch_size!r}.")
        volumes = {name: a for name, a in arrays.items() if a.ndim == 4}
        locations = self.locations
        for first in range(0, len(locations), batch_size):
            chunk = locations[first:first + batch_size]
            yield ({name: np.stack([crop(array, loc[:3], loc[3:]) for loc in chunk])
                    for name, array in volumes.items()}, chunk)
