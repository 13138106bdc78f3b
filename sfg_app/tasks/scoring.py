"""How one subject's written output is scored against its target: a task's metrics.

A task holds one of these as ``task.scoring``; `sfg_app.application.scoring` reads the
outputs back, puts the target on the output's grid and calls ``score``. The metrics
themselves are `sfg_app.evaluation.metrics`'. Numpy only.
"""

from __future__ import annotations

import numpy as np

from sfg_app.evaluation.metrics import (classification_metrics, regression_metrics,
                                        segmentation_metrics)


class SegmentationScoring:
    """Dice and HD95 per foreground class, and their means."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def score(self, prediction, truth, *, mask=None, spacing=None) -> dict[str, float]:
        """``{metric: value}`` of one subject's output against its target, both on the
        output's grid (``spacing`` in mm; ``mask``: counted where > 0.5)."""
        return segmentation_metrics(np.asarray(prediction), np.asarray(truth), mask=mask,
                                    spacing=spacing, num_classes=self.num_classes)


class RegressionScoring:
    """MAE, RMSE, PSNR and SSIM on images; MAE and RMSE on per-subject values."""

    def score(self, prediction, truth, *, mask=None, spacing=None) -> dict[str, float]:
        return regression_metrics(np.asarray(prediction), np.asarray(truth), mask=mask)


class ClassificationScoring:
    """Accuracy of the predicted labels."""

    def score(self, prediction, truth, *, mask=None, spacing=None) -> dict[str, float]:
        return classification_metrics(prediction, truth)
