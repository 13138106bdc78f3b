"""Cross-stitch networks (Misra et al., CVPR 2016) on the HighRes3DNet plan.

One column per task, each built of the same stages as the other networks, with a
cross-stitch unit after every stage (a learned per-channel mix of the columns) and each
task's head on its own column. Widths are matched by kernel count: each column has
``round(width / T)`` kernels a layer (at least 1), so a layer holds about as many kernels
over all columns as the dense and SFG networks' layer, with about 1/T of their
convolution weights and multiply-adds.
"""

from __future__ import annotations

import keras

from sfg_app.errors import ConfigError
from sfg_app.layers.blocks import CrossStitch
from sfg_app.networks.base import MultiTaskNetwork
from sfg_app.networks.stages import HIGHRES_STAGES


@keras.saving.register_keras_serializable(package="sfg_app")
class CrossStitchHighRes3DNet(MultiTaskNetwork):
    """HighRes3DNet columns joined by cross-stitch units (``cross_stitch``)."""

    plan = HIGHRES_STAGES

    def __init__(self, heads, **kwargs):
        super().__init__(heads, **kwargs)
        tasks = len(self.task_names)
        if tasks < 2:
            raise ConfigError(
                "Invalid value for argument `heads`. cross_stitch joins one column per "
                f"task and needs at least 2 tasks. Received 1 head ({self.task_names[0]}). "
                "Use highres3dnet for a single task.")
        widths = [max(1, int(round(self.width(step.filters) / tasks)))
                  for step in self.plan]
        # Column t's stages are stages[t * len(plan) : (t + 1) * len(plan)].
        self.stages = [stage for t in range(tasks)
                       for stage in self._make_stages(f"column_{t}", widths)]
        self.stitches = [CrossStitch(name=f"stitch_{i}") for i in range(len(self.plan))]
        self.task_heads = self._make_heads(grouped=False)

    def _column(self, t: int):
        size = len(self.plan)
        return self.stages[t * size:(t + 1) * size]

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        for t in range(len(self.task_names)):
            shape = tuple(input_shape)
            shapes = []
            for stage in self._column(t):
                stage.build(shape)
                shape = stage.compute_output_shape(shape)
                shapes.append(shape)
            self.task_heads[t].build(shape)
        for stitch, shape in zip(self.stitches, shapes):
            stitch.build([shape] * len(self.task_names))

    def call(self, inputs, training=None):
        training = self._normalisation_training(training)
        columns = [inputs] * len(self.task_names)
        for i, stitch in enumerate(self.stitches):
            columns = stitch([self._column(t)[i](x, training=training)
                              for t, x in enumerate(columns)])
        return {task: head(x)
                for task, head, x in zip(self.task_names, self.task_heads, columns)}
