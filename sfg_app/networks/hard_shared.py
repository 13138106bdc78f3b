"""Hard parameter sharing on HighRes3DNet: the dense trunk, one head per task.

The trunk is the SFG network's stages with grouping off (``plans.HIGHRES_STAGES``), so its
widths are those of ``sfg_highres3dnet``; each task's head reads every channel.
"""

from __future__ import annotations

import keras

from sfg_app.networks.base import MultiTaskNetwork
from sfg_app.networks.stages import HIGHRES_STAGES


@keras.saving.register_keras_serializable(package="sfg_app")
class HardSharedHighRes3DNet(MultiTaskNetwork):
    """The dense HighRes3DNet trunk shared by all tasks (``hard_shared``)."""

    plan = HIGHRES_STAGES

    def __init__(self, heads, **kwargs):
        super().__init__(heads, **kwargs)
        self.stages = self._make_stages()
        self.task_heads = self._make_heads(grouped=False)
