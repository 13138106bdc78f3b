"""The objective of `../shared/design/SFG.md` on a batch: the weighted task losses, plus
`kl_weight` times the KL of the groupings, plus `decay` times the kernels' squared norm.
"""

from __future__ import annotations

from keras import ops

from sfg_app.tasks.weighting import FixedWeighting, UncertaintyWeighting


def weighting_layer(weighting: str, tasks: dict):
    """The layer that adds up the task losses (`[MULTITASK] weighting`), built."""
    if weighting == "uncertainty":
        layer = UncertaintyWeighting(list(tasks))
    else:
        layer = FixedWeighting({name: task.weight for name, task in tasks.items()})
    layer.build(None)
    return layer


class Objective:
    """The total to minimise and its parts, for `tasks` on batches laid out by `layout`
    (`sfg_app.application.batches.BatchLayout`)."""

    def __init__(self, tasks: dict, layout, kl_weight: float, decay: float):
        self.tasks = tasks
        self.layout = layout
        self.kl_weight = kl_weight
        self.decay = decay

    def parts(self, model, weighting, outputs, batch):
        """`(total, logs, (terms, regulariser))`: the total, the named scalars to log, each
        task's weighted loss and what no task owns (the KL, the weight decay). Every
        network declares `grouping_kl()` (0 without SFG layers)."""
        losses, logs = {}, {}
        for name, task in self.tasks.items():
            target = self.layout.spatial(batch[task.target])
            mask = self.layout.spatial(batch[task.mask]) if task.mask else None
            available = batch["available"][task.target]
            losses[name] = task.loss(target, outputs[name], mask, available)
            logs[f"{name}_loss"] = losses[name]
            for metric, value in task.metrics(target, outputs[name], mask, available).items():
                logs[f"{name}_{metric}"] = value
        total = weighting(losses)
        regulariser = ops.zeros((), "float32")
        if self.kl_weight:
            kl = model.grouping_kl()
            logs["kl"] = kl
            total = total + self.kl_weight * kl
            regulariser = regulariser + self.kl_weight * kl
        if self.decay:
            kernels = [v for v in model.trainable_weights if v.path.endswith("kernel")]
            weight_decay = self.decay * ops.sum(
                ops.stack([ops.sum(ops.square(ops.cast(k, "float32"))) for k in kernels]))
            total = total + weight_decay
            regulariser = regulariser + weight_decay
        return total, logs, (weighting.terms(losses), regulariser)
