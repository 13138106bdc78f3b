"""Task types: heads, losses, training metrics and output decoding (``keras.ops`` only).

Nothing here imports TensorFlow, so losses and objective also run with
``KERAS_BACKEND=torch`` or ``jax``.
"""

from sfg_app.tasks.base import Task
from sfg_app.tasks.classification import ClassificationTask
from sfg_app.tasks.regression import RegressionTask
from sfg_app.tasks.segmentation import SegmentationTask
from sfg_app.tasks.weighting import UncertaintyWeighting, fixed_weighting

__all__ = ["Task", "SegmentationTask", "RegressionTask", "ClassificationTask",
           "UncertaintyWeighting", "fixed_weighting"]
