"""Classification: one class label per subject, softmax over ``num_classes`` logits."""

from __future__ import annotations

from sfg_app.tasks.base import CategoricalTask
from sfg_app.tasks.keras_ops import ops
from sfg_app.tasks.losses import weighted_mean
from sfg_app.tasks.scoring import ClassificationScoring


class ClassificationTask(CategoricalTask):
    """An image-level label (``[TASK name] type = classification``), e.g. a diagnosis or
    a sex read from a CSV column. Loss: ``ce``. The head is ``(B, num_classes)``; one row
    per subject in ``<task>.csv``, evaluated by accuracy."""

    type_name = "classification"
    loss_names = ("ce",)
    head_kinds = ("image",)
    scoring = ClassificationScoring()

    def __init__(self, name: str, target: str, *, num_classes: int, head_kind: str = "image",
                 **options):
        super().__init__(name, target, num_classes=num_classes, head_kind=head_kind,
                         **options)

    def batch_metrics(self, target, y_pred, weights) -> dict:
        """``accuracy`` over the available examples (0 when none is available)."""
        correct = ops.sum(target * self.predicted_one_hot(y_pred), axis=-1)
        return {"accuracy": weighted_mean(correct, weights)}
