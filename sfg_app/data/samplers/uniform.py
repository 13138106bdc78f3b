"""Windows drawn with equal chance at every position that keeps them inside the volume."""

from __future__ import annotations

from sfg_app.data.samplers.base import SamplingPlan, WindowSampler


class UniformSampler(WindowSampler):
    """Every start inside the volume equally likely; where the volume is smaller than the
    window along an axis, the window is centred on it and padded with zeros."""

    def _plan(self, subject, shape):
        return SamplingPlan(subject, shape, self.window_size)
