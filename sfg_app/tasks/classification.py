"""Classification: one class label per subject, softmax over ``num_classes`` logits."""

from __future__ import annotations

from keras import ops

from sfg_app.tasks.base import CategoricalTask
from sfg_app.tasks.losses import weighted_mean


class ClassificationTask(CategoricalTask):
    """An image-level label (``[TASK name] type = classification``), e.g. a diagnosis or
    a sex read from a CSV column. Loss: ``ce``. The head is ``(B, num_classes)``."""

    type_name = "classification"
    loss_names = ("ce",)
    default_loss = "ce"

    def __init__(self, name: str, target: str, *, num_classes: int, **options):
        super().__init__(name, target, num_classes=num_classes, head_kind="image", **options)

    def batch_metrics(self, target, y_pred, weights) -> dict:
        """``accuracy`` over the available examples (0 when none is available)."""
        correct = ops.sum(target * self.predicted_one_hot(y_pred), axis=-1)
        return {"accuracy": weighted_mean(correct, weights)}
