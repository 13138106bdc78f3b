"""Windows drawn so that every label class of a volume is equally likely at their centre."""

from __future__ import annotations

import numpy as np

from sfg_app.data.samplers.base import MapSampler
from sfg_app.errors import DataError


class BalancedSampler(MapSampler):
    """Each class present in the label section ``sampling_map`` is drawn with chance
    1 / (number of classes present), then a voxel of that class uniformly.

    Balancing is per volume: a class absent from a volume is skipped for that volume, its
    share going to the classes it does contain (a volume holding only background gives
    uniform windows); nothing fails, and classes absent everywhere are never drawn.
    """

    def probability_map(self, subject, shape):
        labels = self.map_volume(subject)
        classes, counts = self._class_counts(labels)
        weight = 1.0 / (counts.astype(np.float64) * classes.size)
        return lambda box: weight[np.searchsorted(classes, labels[box])]

    def _class_counts(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = labels.ravel()
        if not np.issubdtype(flat.dtype, np.integer):
            whole = np.isfinite(flat) & (flat == np.round(flat))
            if not whole.all():
                raise DataError(
                    f"The label section {self.sampling_map!r} read by the balanced sampler "
                    f"must hold integer class labels. Received values such as "
                    f"{flat[~whole][:3].tolist()}. Give a label map (interp_order = 0) "
                    "or use window_sampling = weighted for a probability map.")
            flat = flat.astype(np.int64)
        low, high = int(flat.min()), int(flat.max())
        if high - low < 1 << 20:
            counts = np.bincount(flat - low)
            classes = np.flatnonzero(counts)
            return classes + low, counts[classes]
        return np.unique(flat, return_counts=True)
