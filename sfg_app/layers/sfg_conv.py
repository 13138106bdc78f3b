"""The SFG convolution: a convolution whose kernels are routed by channel-to-group masks.

With ``m_in`` (C_in x G) the input channels' groups, ``m_out`` (C_out x G) the kernels'
groups and C the G x G connectivity, kernel o reads input channel i with weight
``(m_in C m_out^T)[i, o]``. Two implementations give the same result for any masks that
are constant over space (a convolution is linear in its inputs and weights):

- ``reference``: one convolution per output group g, on the input masked to the groups
  that feed g, its output masked to g's kernels, summed over g (G convolutions);
- ``fused``: ONE convolution with the masked weight ``W * (m_in C m_out^T)``.

Per-example masks (``(B, C, G)``) would need per-example weights, so only ``reference``
takes them.
"""

from __future__ import annotations

import keras
from keras import ops

from sfg_app import arguments
from sfg_app.layers.grouping import CONNECTIVITIES, IMPLEMENTATIONS, connectivity_matrix


def broadcast_channels(values, rank: int):
    """``(C,)`` or per example ``(B, C)`` to a shape that broadcasts against
    ``(B, *spatial, C)`` with ``rank`` spatial axes."""
    if len(values.shape) == 1:
        return values
    return ops.reshape(values, (ops.shape(values)[0],) + (1,) * rank + (values.shape[-1],))


def channel_scale(x, scale):
    """``x * scale`` per channel, ``scale`` being ``(C,)`` or per example ``(B, C)``."""
    return x * ops.cast(broadcast_channels(scale, len(x.shape) - 2), x.dtype)


def check_masks(masks, channels: int, name: str, num_groups: int | None = None):
    """Raises unless ``masks`` is ``(channels, G)`` or ``(B, channels, G)``."""
    shape = tuple(masks.shape)
    if len(shape) not in (2, 3) or shape[-2] != channels \
            or (num_groups is not None and shape[-1] != num_groups):
        groups = "G" if num_groups is None else num_groups
        raise ValueError(f"Invalid value for argument `{name}`. Expected masks of shape "
                         f"({channels}, {groups}) or (batch, {channels}, {groups}). "
                         f"Received {name} of shape {shape}.")


@keras.saving.register_keras_serializable(package="sfg_app")
class SFGConv(keras.layers.Layer):
    """A stride-1 'same' convolution (2D or 3D, from the input rank) routed by groups.

    ``call(x, groups_in=None, groups_out=None)``. Without ``groups_out`` it is an
    ordinary convolution (the dense networks use it so). Without ``groups_in`` every
    group reads every input channel (the first SFG layer reads the image so).
    """

    def __init__(self, filters: int, kernel_size: int = 3, dilation_rate: int = 1,
                 connectivity: str = "mixed", impl: str = "fused", use_bias: bool = False,
                 kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.filters = arguments.positive_int(filters, "filters")
        self.kernel_size = arguments.positive_int(kernel_size, "kernel_size")
        self.dilation_rate = arguments.positive_int(dilation_rate, "dilation_rate")
        self.connectivity = arguments.one_of(connectivity, "connectivity", CONNECTIVITIES)
        self.impl = arguments.one_of(impl, "impl", IMPLEMENTATIONS)
        self.use_bias = arguments.flag(use_bias, "use_bias")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        rank = len(input_shape) - 2
        if rank not in (2, 3) or input_shape[-1] is None:
            raise ValueError(f"Invalid input shape for layer `{self.name}`. Expected "
                             "(batch, *spatial, channels) with 2 or 3 spatial axes and "
                             f"known channels. Received input_shape={tuple(input_shape)}.")
        self.rank = rank
        self.kernel = self.add_weight(
            shape=(self.kernel_size,) * rank + (input_shape[-1], self.filters),
            initializer=self.kernel_initializer, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros",
                                    name="bias") if self.use_bias else None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def _convolve(self, x, kernel):
        return ops.conv(x, kernel, strides=1, padding="same",
                        dilation_rate=self.dilation_rate)

    def _input_feeds(self, groups_in, num_groups):
        """``m_in C``: which output groups each input channel feeds (``None``: all)."""
        if groups_in is None:
            return None
        check_masks(groups_in, self.kernel.shape[-2], "groups_in", num_groups)
        routing = ops.convert_to_tensor(connectivity_matrix(self.connectivity, num_groups))
        return ops.matmul(ops.cast(groups_in, "float32"), routing)

    def call(self, x, groups_in=None, groups_out=None):
        if groups_out is None:
            if groups_in is not None:
                raise ValueError("`groups_in` was given without `groups_out`; an SFG "
                                 "convolution needs the groups of its own kernels.")
            outputs = self._convolve(x, self.kernel)
        else:
            check_masks(groups_out, self.filters, "groups_out")
            feeds = self._input_feeds(groups_in, groups_out.shape[-1])
            if self.impl == "fused":
                outputs = self._fused(x, feeds, groups_out)
            else:
                outputs = self._reference(x, feeds, groups_out)
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs

    def _fused(self, x, feeds, groups_out):
        if len(groups_out.shape) == 3 or (feeds is not None and len(feeds.shape) == 3):
            raise ValueError(
                f"Layer `{self.name}` has impl='fused', which cannot take per-example "
                "groups (masks of shape (batch, channels, groups)): they would need "
                "per-example weights. Use impl='reference' or sample_per='step'.")
        groups_out = ops.cast(groups_out, "float32")
        if feeds is None:
            routing = ops.sum(groups_out, axis=-1)[None, :]
        else:
            routing = ops.matmul(feeds, ops.transpose(groups_out))
        return self._convolve(x, self.kernel * ops.cast(routing, self.compute_dtype))

    def _reference(self, x, feeds, groups_out):
        outputs = 0
        for group in range(groups_out.shape[-1]):
            group_input = x if feeds is None else channel_scale(x, feeds[..., group])
            outputs = outputs + channel_scale(self._convolve(group_input, self.kernel),
                                              groups_out[..., group])
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      dilation_rate=self.dilation_rate, connectivity=self.connectivity,
                      impl=self.impl, use_bias=self.use_bias,
                      kernel_initializer=keras.initializers.serialize(
                          self.kernel_initializer))
        return config
