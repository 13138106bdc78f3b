"""Windows drawn around voxels in proportion to a probability map section."""

from __future__ import annotations

import numpy as np

from sfg_app.data.samplers.base import MapSampler


class WeightedSampler(MapSampler):
    """A voxel is drawn with probability proportional to ``sampling_map`` (one channel,
    finite, non-negative, not all zero; any scale), and the window placed around it."""

    def probability_map(self, subject, shape):
        volume = self.map_volume(subject)
        return lambda box: np.asarray(volume[box], np.float64)
