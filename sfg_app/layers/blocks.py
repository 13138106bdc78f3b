"""Building blocks of the networks, the same with grouping on (SFG) and off (dense).

Every block takes the channel-to-group masks of its input and output (``None`` when
grouping is off), so a dense baseline is the SFG network's own blocks without masks and
its widths match by construction. Inside a block that follows an SFG layer (the residual
units) the convolutions use the same masks for input and output (``M = m C m^T``) and the
shortcuts are identities: a channel stays in its group.

Each block also copies into a smaller twin (grouping off) the weights of a subset of its
kernels, as ``keep_kernels``: the compact export (``networks/compact.py``) is a loop over
the stages calling it, each block knowing what its own layers hold.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from sfg_app import arguments
from sfg_app.layers.activations import ChannelActivation
from sfg_app.layers.grouping import connectivity_matrix
from sfg_app.layers.normalisation import GroupwiseNormalization
from sfg_app.layers.sfg_conv import SFGConv, channel_scale, check_masks

NORM_LAYERS = ("batch", "instance", "none")
HEAD_KINDS = ("voxel", "image")


class _GroupedLayer(keras.layers.Layer):
    """Arguments shared by the blocks: nonlinearity, normalisation and group routing."""

    def __init__(self, activation: str = "relu", norm_layer: str = "batch",
                 num_groups: int = 1, connectivity: str = "mixed", impl: str = "fused",
                 shared_norm_parameters: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.activation = activation
        self.norm_layer = arguments.one_of(norm_layer, "norm_layer", NORM_LAYERS)
        self.num_groups = arguments.positive_int(num_groups, "num_groups")
        self.connectivity = connectivity
        self.impl = impl
        self.shared_norm_parameters = arguments.flag(shared_norm_parameters,
                                                     "shared_norm_parameters")

    def _conv(self, filters, kernel_size, dilation_rate, name):
        return SFGConv(filters, kernel_size, dilation_rate, connectivity=self.connectivity,
                       impl=self.impl, use_bias=self.norm_layer == "none", name=name)

    def _norm(self, name):
        if self.norm_layer == "none":
            return None
        return GroupwiseNormalization(self.num_groups, self.norm_layer, name=name,
                                      shared_norm_parameters=self.shared_norm_parameters)

    def get_config(self):
        config = super().get_config()
        config.update(activation=self.activation, norm_layer=self.norm_layer,
                      num_groups=self.num_groups, connectivity=self.connectivity,
                      impl=self.impl, shared_norm_parameters=self.shared_norm_parameters)
        return config


def _normalise(norm, x, groups, training):
    return x if norm is None else norm(x, groups=groups, training=training)


def _build_all(layers, shape):
    for layer in layers:
        if layer is not None:
            layer.build(shape)


def _numpy(variable):
    return np.asarray(ops.convert_to_numpy(variable), np.float32)


def _routing(connectivity: str, groups_in, groups_out):
    """``m_in C m_out^T`` of an SFG convolution as numpy, broadcasting against its kernel:
    which input channel each kernel reads (every one without ``groups_in`` or
    ``groups_out``, as ``SFGConv.call``)."""
    if groups_out is None:
        return np.float32(1.0)
    if groups_in is None:
        return np.ones((1, groups_out.shape[0]), np.float32)
    return groups_in @ connectivity_matrix(connectivity, groups_out.shape[-1]) @ groups_out.T


def _keep_conv(source: SFGConv, target: SFGConv, routing, kept_in, kept_out) -> None:
    """``target``'s kernel is ``(W * routing)[..., kept_in, kept_out]``: what ``source``
    applies from the kept input channels to the kept kernels, with no routing left."""
    weight = _numpy(source.kernel) * routing
    target.kernel.assign(weight[..., kept_in, :][..., kept_out])
    if source.use_bias:
        target.bias.assign(_numpy(source.bias)[kept_out])


def _keep_activation(source: ChannelActivation, target: ChannelActivation, kept) -> None:
    if source.activation == "prelu":  # the one activation with weights: a slope per channel
        target.alpha.assign(_numpy(source.alpha)[kept])


def _keep_norm(source, target, kept, groups) -> None:
    if source is not None:  # norm_layer = none
        target.keep_channels(source, kept, groups)


@keras.saving.register_keras_serializable(package="sfg_app")
class ConvBlock(_GroupedLayer):
    """conv -> normalisation -> activation: an SFG layer when given ``groups_out``."""

    def __init__(self, filters: int, kernel_size: int = 3, dilation_rate: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.conv = self._conv(filters, kernel_size, dilation_rate, "conv")
        self.norm = self._norm("norm")
        self.act = ChannelActivation(self.activation, name="act")

    def build(self, input_shape):
        self.conv.build(input_shape)
        _build_all((self.norm, self.act), self.conv.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def call(self, x, groups_in=None, groups_out=None, training=None):
        x = self.conv(x, groups_in=groups_in, groups_out=groups_out)
        return self.act(_normalise(self.norm, x, groups_out, training))

    @property
    def input_channels(self) -> int:
        """Channels of the input it was built for."""
        return int(self.conv.kernel.shape[-2])

    @property
    def spatial_rank(self) -> int:
        """2 or 3: the spatial axes of its convolution."""
        return self.conv.rank

    def keep_kernels(self, source: ConvBlock, kept_in, kept_out, groups_in=None,
                     groups_out=None) -> None:
        """Sets this block (built grouping off, ``len(kept_in)`` input channels,
        ``len(kept_out)`` kernels) to compute ``source``'s kernels ``kept_out`` from its
        input channels ``kept_in``, under the fixed one-hot masks ``groups_in`` and
        ``groups_out`` (numpy ``(C, G)``, as ``call`` takes them): the routing is folded
        into the kernel, and each normalisation entry is the one of its channel's group."""
        routing = _routing(source.connectivity, groups_in, groups_out)
        _keep_conv(source.conv, self.conv, routing, kept_in, kept_out)
        _keep_norm(source.norm, self.norm, kept_out, groups_out)
        _keep_activation(source.act, self.act, kept_out)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      dilation_rate=self.dilation_rate)
        return config


@keras.saving.register_keras_serializable(package="sfg_app")
class ResidualUnit(_GroupedLayer):
    """HighRes3DNet's pre-activation unit: ``x + conv(act(norm(conv(act(norm(x))))))``.

    Its width is its input's; both convolutions keep the masks of the SFG layer before
    it, so the identity shortcut never moves a channel to another group.
    """

    def __init__(self, kernel_size: int = 3, dilation_rate: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = arguments.positive_int(kernel_size, "kernel_size")
        self.dilation_rate = arguments.positive_int(dilation_rate, "dilation_rate")
        self.norms = [self._norm(f"norm_{i}") for i in range(2)]
        self.acts = [ChannelActivation(self.activation, name=f"act_{i}") for i in range(2)]
        self.convs = []

    def build(self, input_shape):
        self.convs = [self._conv(input_shape[-1], self.kernel_size, self.dilation_rate,
                                 f"conv_{i}") for i in range(2)]
        _build_all(self.norms + self.acts + self.convs, input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x, groups=None, training=None):
        h = x
        for norm, act, conv in zip(self.norms, self.acts, self.convs):
            h = conv(act(_normalise(norm, h, groups, training)), groups_in=groups,
                     groups_out=groups)
        return x + h

    def keep_kernels(self, source: ResidualUnit, kept, groups=None) -> None:
        """As ``ConvBlock.keep_kernels``, for the channels ``kept`` (the unit's input and
        output are one set of channels, routed by ``groups`` both ways)."""
        routing = _routing(source.connectivity, groups, groups)
        for norm, act, conv, full_norm, full_act, full_conv in zip(
                self.norms, self.acts, self.convs, source.norms, source.acts, source.convs):
            _keep_norm(full_norm, norm, kept, groups)
            _keep_activation(full_act, act, kept)
            _keep_conv(full_conv, conv, routing, kept, kept)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, dilation_rate=self.dilation_rate)
        return config


@keras.saving.register_keras_serializable(package="sfg_app")
class Stage(_GroupedLayer):
    """One conv block (the SFG layer), then residual units, then optional 2x max pooling.

    HighRes3DNet's stages are a block and three residual units at one dilation; VGG's
    are a block with or without pooling. The masks of the block's kernels
    (``groups_out``) also route its residual units; pooling is per channel.
    """

    def __init__(self, filters: int, kernel_size: int = 3, residual_units: int = 0,
                 dilation_rate: int = 1, pool: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = arguments.positive_int(filters, "filters")
        self.kernel_size = arguments.positive_int(kernel_size, "kernel_size")
        if isinstance(residual_units, bool) or not isinstance(residual_units, int) \
                or residual_units < 0:
            raise arguments.invalid("residual_units", residual_units, "an integer >= 0")
        self.residual_units = residual_units
        self.dilation_rate = arguments.positive_int(dilation_rate, "dilation_rate")
        self.pool = arguments.flag(pool, "pool")
        shared = dict(activation=self.activation, norm_layer=self.norm_layer,
                      num_groups=self.num_groups, connectivity=self.connectivity,
                      impl=self.impl, shared_norm_parameters=self.shared_norm_parameters)
        self.block = ConvBlock(filters, kernel_size, name="block", **shared)
        self.units = [ResidualUnit(kernel_size, dilation_rate, name=f"residual_{i}",
                                   **shared) for i in range(residual_units)]

    def build(self, input_shape):
        self.block.build(input_shape)
        _build_all(self.units, self.block.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        shape = self.block.compute_output_shape(input_shape)
        if self.pool:
            shape = (shape[0],) + tuple(None if d is None else math.ceil(d / 2)
                                        for d in shape[1:-1]) + (shape[-1],)
        return shape

    def call(self, x, groups_in=None, groups_out=None, training=None):
        x = self.block(x, groups_in=groups_in, groups_out=groups_out, training=training)
        for unit in self.units:
            x = unit(x, groups=groups_out, training=training)
        if self.pool:
            x = ops.max_pool(x, pool_size=2, strides=2, padding="same")
        return x

    @property
    def input_channels(self) -> int:
        """Channels of the input it was built for."""
        return self.block.input_channels

    @property
    def spatial_rank(self) -> int:
        """2 or 3: the spatial axes of its convolutions."""
        return self.block.spatial_rank

    def keep_kernels(self, source: Stage, kept_in, kept_out, groups_in=None,
                     groups_out=None) -> None:
        """As ``ConvBlock.keep_kernels``: the block's kernels ``kept_out`` and the same
        channels of the residual units (routed by ``groups_out``, as in ``call``)."""
        self.block.keep_kernels(source.block, kept_in, kept_out, groups_in, groups_out)
        for unit, full_unit in zip(self.units, source.units):
            unit.keep_kernels(full_unit, kept_out, groups_out)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size,
                      residual_units=self.residual_units,
                      dilation_rate=self.dilation_rate, pool=self.pool)
        return config


@keras.saving.register_keras_serializable(package="sfg_app")
class TaskHead(keras.layers.Layer):
    """A task's output: a 1x1 convolution (``voxel``) or global average pooling and a
    dense layer (``image``), reading the channels of groups {task, shared} only.

    ``call(x, groups=None)``; without ``groups`` or ``task_index`` it reads every
    channel (the dense networks). Always float32, so logits are float32 under mixed
    precision.
    """

    def __init__(self, channels: int, kind: str = "voxel", task_index: int | None = None,
                 **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        self.channels = arguments.positive_int(channels, "channels")
        self.kind = arguments.one_of(kind, "kind", HEAD_KINDS)
        if task_index is not None and (isinstance(task_index, bool)
                                       or not isinstance(task_index, int) or task_index < 0):
            raise arguments.invalid("task_index", task_index, "None or an integer >= 0")
        self.task_index = task_index

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.channels),
                                      initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.channels,), initializer="zeros",
                                    name="bias")

    def compute_output_shape(self, input_shape):
        if self.kind == "image":
            return (input_shape[0], self.channels)
        return tuple(input_shape[:-1]) + (self.channels,)

    def _feeds(self, groups):
        """Which input channels this task reads: ``(C,)`` or per example ``(B, C)``."""
        if groups is None or self.task_index is None:
            return None
        check_masks(groups, self.kernel.shape[0], "groups")
        if self.task_index >= groups.shape[-1] - 1:
            raise ValueError(f"Head `{self.name}` reads task group {self.task_index}, but "
                             f"the masks have {groups.shape[-1]} groups (tasks + shared).")
        groups = ops.cast(groups, "float32")
        return groups[..., self.task_index] + groups[..., -1]

    def call(self, x, groups=None):
        feeds = self._feeds(groups)
        kernel = self.kernel
        if self.kind == "image":
            x = ops.mean(x, axis=tuple(range(1, len(x.shape) - 1)))
            if feeds is not None:
                x = x * feeds
        elif feeds is not None and len(feeds.shape) == 1:
            kernel = kernel * ops.expand_dims(feeds, -1)
        elif feeds is not None:
            x = channel_scale(x, feeds)
        return ops.matmul(x, kernel) + self.bias

    def keep_kernels(self, source: TaskHead, kept_in, groups=None) -> None:
        """Sets this head (built reading ``len(kept_in)`` channels, no task index) to
        compute ``source``'s output from its input channels ``kept_in`` under the fixed
        one-hot masks ``groups`` (numpy ``(C, G)``): the channels it does not read are
        zeroed into the kernel."""
        kernel = _numpy(source.kernel)
        if groups is not None and source.task_index is not None:
            kernel = kernel * (groups[:, source.task_index] + groups[:, -1])[:, None]
        self.kernel.assign(kernel[kept_in])
        self.bias.assign(_numpy(source.bias))

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, kind=self.kind, task_index=self.task_index)
        return config


@keras.saving.register_keras_serializable(package="sfg_app")
class CrossStitch(keras.layers.Layer):
    """Misra et al. (CVPR 2016): each column's next input is a learned per-channel mix
    of all T columns, ``out_t = sum_s alpha[t, s] * x_s``.

    ``alpha`` starts at ``same`` on the diagonal and ``(1 - same) / (T - 1)`` elsewhere
    (0.9 / 0.1 for two tasks, the paper's choice).
    """

    def __init__(self, same: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.same = arguments.positive_float(same, "same")
        if self.same > 1:
            raise arguments.invalid("same", same, "a number in (0, 1]")

    def build(self, input_shape):
        columns = len(input_shape)
        channels = {shape[-1] for shape in input_shape}
        if columns < 2 or len(channels) != 1:
            raise ValueError(f"Layer `{self.name}` takes a list of at least 2 tensors "
                             "with equal channels. Received shapes "
                             f"{[tuple(s) for s in input_shape]}.")
        other = (1.0 - self.same) / (columns - 1)
        start = np.full((columns, columns), other, np.float32)
        np.fill_diagonal(start, self.same)

        def initializer(shape, dtype=None):
            return ops.cast(ops.convert_to_tensor(start)[:, :, None] * ops.ones(shape),
                            dtype or "float32")

        self.alpha = self.add_weight(shape=(columns, columns, channels.pop()),
                                     initializer=initializer, name="alpha")

    def compute_output_shape(self, input_shape):
        return [tuple(shape) for shape in input_shape]

    def call(self, columns):
        stacked = ops.stack(columns, axis=-2)            # (B, *spatial, T, C)
        return [ops.sum(stacked * self.alpha[t], axis=-2) for t in range(len(columns))]

    def get_config(self):
        config = super().get_config()
        config.update(same=self.same)
        return config
