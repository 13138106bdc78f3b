"""HighRes3DNet (Li et al., IPMI 2017) in the shape the SFG authors used, with and
without Stochastic Filter Groups.

Five conv blocks of 16, 32, 64, 64, 64 kernels (3x3(x3), times ``layer_scale``); each
of the first three is followed by three of HighRes3DNet's pre-activation residual units
(two 3x3(x3) convolutions each) at dilation 1, 2 and 4. Li et al. use three units per
stage; the SFG authors' last version used two: we keep Li et al.'s three. In the SFG
network the five blocks are the SFG layers, and each task's 1x1 head reads the groups
{task, shared} of the last one. No shortcut crosses an SFG layer, so the identity
shortcuts keep every channel in its group without projections or padding.
"""

from __future__ import annotations

import keras

from sfg_app.errors import ConfigError
from sfg_app.networks.base import SFGNetwork
from sfg_app.networks.hard_shared import HardSharedHighRes3DNet
from sfg_app.networks.stages import HIGHRES_STAGES


@keras.saving.register_keras_serializable(package="sfg_app")
class SFGHighRes3DNet(SFGNetwork):
    """HighRes3DNet whose five conv blocks are SFG layers (``sfg_highres3dnet``)."""

    plan = HIGHRES_STAGES


@keras.saving.register_keras_serializable(package="sfg_app")
class HighRes3DNet(HardSharedHighRes3DNet):
    """The single-task dense network (``highres3dnet``)."""

    def __init__(self, heads, **kwargs):
        if hasattr(heads, "__len__") and len(heads) > 1:
            raise ConfigError(
                f"Invalid value for argument `heads`. highres3dnet is a single-task "
                f"network. Received {len(heads)} heads ({', '.join(map(str, heads))}). "
                "Use hard_shared (a shared trunk, one head per task), cross_stitch or "
                "sfg_highres3dnet for several tasks.")
        super().__init__(heads, **kwargs)
