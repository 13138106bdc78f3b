"""Window samplers: training (uniform, weighted, balanced, resize) and inference (grid)."""

from sfg_app.data.samplers.balanced import BalancedSampler
from sfg_app.data.samplers.base import (MapSampler, SamplingPlan, WindowSampler, crop,
                                        crop_view)
from sfg_app.data.samplers.grid import GridPlan, GridSampler
from sfg_app.data.samplers.resize import ResizePlan, ResizeSampler, resize
from sfg_app.data.samplers.uniform import UniformSampler
from sfg_app.data.samplers.weighted import WeightedSampler

__all__ = ["BalancedSampler", "GridPlan", "GridSampler", "MapSampler", "ResizePlan",
           "ResizeSampler", "SamplingPlan", "UniformSampler", "WeightedSampler",
           "WindowSampler", "crop", "crop_view", "resize"]
