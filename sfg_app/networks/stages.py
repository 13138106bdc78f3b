"""The layer tables of the paper's networks: one ``StageSpec`` per conv block."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: a conv block of ``filters`` (before ``layer_scale``), then residual
    units at ``dilation_rate``, then optional 2x max pooling."""

    filters: int
    residual_units: int = 0
    dilation_rate: int = 1
    pool: bool = False


# HighRes3DNet in the SFG authors' shape (see highres3dnet.py).
HIGHRES_STAGES = (
    StageSpec(16, residual_units=3, dilation_rate=1),
    StageSpec(32, residual_units=3, dilation_rate=2),
    StageSpec(64, residual_units=3, dilation_rate=4),
    StageSpec(64),
    StageSpec(64),
)

# VGG-11 without its last pooling and dense layers (see vgg.py).
VGG_STAGES = (
    StageSpec(64, pool=True),
    StageSpec(128, pool=True),
    StageSpec(256), StageSpec(256, pool=True),
    StageSpec(512), StageSpec(512, pool=True),
    StageSpec(512), StageSpec(512),
)
