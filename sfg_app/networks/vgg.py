"""The VGG-11-like SFG network of the paper's faces study (image-level tasks).

SFG layers of 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512 kernels (3x3, times
``layer_scale``; M: 2x max pooling, 'same' padding so small inputs never vanish), global
average pooling, and one dense head per task reading the groups {task, shared} of the
last layer. 2D or 3D from the input rank.
"""

from __future__ import annotations

import keras

from sfg_app.networks.base import SFGNetwork
from sfg_app.networks.stages import VGG_STAGES


@keras.saving.register_keras_serializable(package="sfg_app")
class SFGVGG(SFGNetwork):
    """VGG-11-like SFG network with image-level heads (``sfg_vgg``)."""

    plan = VGG_STAGES
    head_kinds = ("image",)
