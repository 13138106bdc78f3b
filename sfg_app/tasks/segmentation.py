"""Segmentation: one class label per voxel, softmax over ``num_classes`` logits."""

from __future__ import annotations

import functools

from sfg_app.tasks.base import OUTPUT_INTERP_ORDER, CategoricalTask
from sfg_app.tasks.keras_ops import ops
from sfg_app.tasks.scoring import SegmentationScoring


class SegmentationTask(CategoricalTask):
    """A voxel-level label map (``[TASK name] type = segmentation``).

    Losses: ``dice_ce`` (default), ``ce``, ``dice``, ``generalised_dice``. Evaluated by
    Dice and HD95 per foreground class, and their means.
    """

    type_name = "segmentation"
    loss_names = ("dice_ce", "ce", "dice", "generalised_dice")
    keys = CategoricalTask.keys + (OUTPUT_INTERP_ORDER,)
    head_kinds = ("voxel",)
    label_target = True

    def __init__(self, name: str, target: str, *, num_classes: int, head_kind: str = "voxel",
                 **options):
        super().__init__(name, target, num_classes=num_classes, head_kind=head_kind,
                         **options)

    def batch_metrics(self, target, y_pred, weights) -> dict:
        """``dice``: hard Dice pooled over the batch, averaged over the foreground classes
        present in the truth or the prediction; 1.0 when none is present in either
        (nothing to find, nothing found)."""
        predicted = self.predicted_one_hot(y_pred)[..., 1:]
        target = target[..., 1:]
        w = ops.expand_dims(weights, -1)
        axes = tuple(range(len(y_pred.shape) - 1))
        intersection = ops.sum(w * predicted * target, axis=axes)
        volumes = ops.sum(w * predicted, axis=axes) + ops.sum(w * target, axis=axes)
        present = ops.greater(volumes, 0.0)
        scores = ops.where(present, 2.0 * intersection / ops.where(present, volumes, 1.0), 0.0)
        count = ops.sum(ops.cast(present, "float32"))
        mean = ops.sum(scores) / ops.maximum(count, 1.0)
        return {"dice": ops.where(ops.greater(count, 0.0), mean, 1.0)}

    @functools.cached_property
    def scoring(self) -> SegmentationScoring:
        return SegmentationScoring(self.num_classes)
