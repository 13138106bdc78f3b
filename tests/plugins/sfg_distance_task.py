"""A task type that sfg does not ship, installed as a plugin: the signed distance to a
structure's boundary, in millimetres (negative inside), regressed per voxel.

It exists to show that a task type is one module: its own `[TASK]` key (``clip_mm``),
losses, head, loss, training metric, decoding, an extra output file (``inside``, the
structure the distances enclose: sfg's `ValueOutputs` with one more kind) and its own
evaluation metrics (a scoring object), all reached through the entry point
``distance = sfg_distance_task:DistanceTask`` of the group ``sfg_app.task_types``
(tests/plugins/test_plugin_task_type.py installs it).
"""

from __future__ import annotations

import functools

import numpy as np

from sfg_app.evaluation.metrics import dice_score, mean_absolute_error
from sfg_app.keys import Float, key
from sfg_app.tasks.base import OUTPUT_INTERP_ORDER, Task
from sfg_app.tasks.keras_ops import ops
from sfg_app.tasks.losses import weighted_mean
from sfg_app.tasks.outputs import ValueOutputs


class DistanceOutputs(ValueOutputs):
    """The distances, and ``inside``: the voxels of negative distance."""

    def kinds(self, with_variance: bool) -> tuple[str, ...]:
        kinds = super().kinds(with_variance)
        return kinds[:1] + ("inside",) + kinds[1:]

    def volumes(self, blended, output, undo) -> dict:
        distances = undo(blended, self.interp_order)
        return {"": (distances, np.float32),
                "inside": ((distances < 0).astype(np.uint8), None)}


class DistanceScoring:
    """The distance error and the Dice of the inside, both within +-clip_mm."""

    def __init__(self, clip_mm: float):
        self.clip_mm = clip_mm

    def score(self, prediction, truth, *, mask=None, spacing=None) -> dict[str, float]:
        prediction = np.clip(np.asarray(prediction, np.float64), -self.clip_mm, self.clip_mm)
        truth = np.clip(np.asarray(truth, np.float64), -self.clip_mm, self.clip_mm)
        return {"mae_mm": mean_absolute_error(prediction, truth),
                "inside_dice": dice_score(prediction < 0, truth < 0)}


class DistanceTask(Task):
    """The network learns ``clip(d / clip_mm, -1, 1)``; outputs are in mm."""

    type_name = "distance"
    loss_names = ("huber", "l1")
    keys = (key("clip_mm", Float(0, low_open=True), 10.0,
                "Distances beyond +-clip_mm are clipped; the network learns d / clip_mm."),
            OUTPUT_INTERP_ORDER)
    head_kinds = ("voxel",)
    identity_keys = ("clip_mm",)  # the outputs are in units of clip_mm

    def __init__(self, name: str, target: str, *, clip_mm: float = 10.0, **options):
        super().__init__(name, target, **options)
        self.clip_mm = self.check.number(clip_mm, "clip_mm", strictly_positive=True)

    @property
    def head_channels(self) -> int:
        return 1

    def encode_target(self, y_true):
        finite = ops.isfinite(y_true)
        target = ops.where(finite, ops.clip(y_true / self.clip_mm, -1.0, 1.0), 0.0)
        return target, ops.all(finite, axis=-1)

    def batch_metrics(self, target, y_pred, weights) -> dict:
        error = ops.abs(ops.clip(y_pred, -1.0, 1.0) - target)[..., 0] * self.clip_mm
        return {"mae_mm": weighted_mean(error, weights)}

    def decode(self, y_pred) -> dict:
        return {"values": ops.clip(self._output(y_pred), -1.0, 1.0) * self.clip_mm}

    @functools.cached_property
    def outputs(self) -> DistanceOutputs:
        return DistanceOutputs(self.name, self.output_interp_order)

    @functools.cached_property
    def scoring(self) -> DistanceScoring:
        return DistanceScoring(self.clip_mm)
