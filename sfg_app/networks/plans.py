"""The layer tables of the paper's networks: one ``StagePlan`` per conv block."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One stage: a conv block of ``filters`` (before ``layer_scale``), then residual
    units at ``dilation_rate``, then optional 2x max pooling."""

    filters: int
    residual_units: int = 0
    dilation_rate: int = 1
    pool: bool = False


# HighRes3DNet in the SFG authors' shape (see highres3dnet.py).
HIGHRES_PLAN = (
    StagePlan(16, residual_units=3, dilation_rate=1),
    StagePlan(32, residual_units=3, dilation_rate=2),
    StagePlan(64, residual_units=3, dilation_rate=4),
    StagePlan(64),
    StagePlan(64),
)

# VGG-11 without its last pooling and dense layers (see vgg.py).
VGG_PLAN = (
    StagePlan(64, pool=True),
    StagePlan(128, pool=True),
    StagePlan(256), StagePlan(256, pool=True),
    StagePlan(512), StagePlan(512, pool=True),
    StagePlan(512), StagePlan(512),
)
