"""Whole images resized to the window (training), and network outputs resized back.

For networks that see a whole image at a fixed size (classification, image-level
regression). Resizing aligns voxel edges (the volume's extent maps onto the window's),
linear for intensities and values, nearest neighbour for label sections.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sfg_app.data.samplers.base import (SamplingPlan, WindowSampler, locations_from_starts,
                                        spatial_shape)


class ResizeSampler(WindowSampler):
    """Every window is the subject's whole volume resized to ``spatial_window_size``; its
    location is ``[0, 0, 0, *spatial_window_size]`` in the resized grid."""

    def _plan(self, subject, shape):
        plan = self.inference_plan(shape)
        return SamplingPlan(plan.resized(subject), self.window_size, self.window_size)

    def inference_plan(self, subject_or_shape: Mapping[str, np.ndarray] | Sequence[int]
                       ) -> "ResizePlan":
        """One window per subject: its volumes resized; outputs resized back by the
        aggregators (``sfg_app.data.aggregators``)."""
        if isinstance(subject_or_shape, Mapping):
            shape = spatial_shape(subject_or_shape)
        else:
            shape = tuple(int(s) for s in subject_or_shape)
        return ResizePlan(shape, self.window_size, self.label_sections)


@dataclass(frozen=True)
class ResizePlan:
    """The single window of a resized subject, as :class:`GridPlan` plans a grid."""

    shape: tuple[int, int, int]
    window_size: tuple[int, int, int]
    label_sections: tuple[str, ...] = ()

    @property
    def locations(self) -> np.ndarray:
        return locations_from_starts(np.zeros((1, 3)), self.window_size)

    def resized(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Volumes resized (nearest for label sections); per-subject values as they are."""
        return {name: resize(array, self.window_size,
                             order=0 if name in self.label_sections else 1)
                if array.ndim == 4 else array for name, array in arrays.items()}

    def batches(self, arrays: Mapping[str, np.ndarray], batch_size: int = 1
                ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """The one batch ``({section: (1, X, Y, Z, C)}, locations (1, 6))``."""
        yield ({name: array[None] for name, array in self.resized(arrays).items()
                if array.ndim == 4}, self.locations)


def resize(array: np.ndarray, spatial_size: Sequence[int], order: int) -> np.ndarray:
    """An ``(X, Y, Z, C)`` array resampled to ``spatial_size`` with spline ``order``
    (0 nearest, 1 linear), edges aligned; the inverse for outputs is the same call with
    the volume's shape."""
    factors = [new / old for new, old in zip(spatial_size, array.shape[:3])]
    if all(f == 1 for f in factors):
        return array.copy()
    channels = [ndimage.zoom(array[..., c], factors, order=order, mode="nearest",
                             grid_mode=True, prefilter=False)
                for c in range(array.shape[3])]
    return np.stack(channels, axis=-1)
