"""The networks' nonlinearity, chosen by the config key ``activation``."""

from __future__ import annotations

import keras
from keras import ops

from sfg_app import arguments

ACTIVATIONS = ("relu", "leaky_relu", "elu", "prelu")


@keras.saving.register_keras_serializable(package="sfg_app")
class ChannelActivation(keras.layers.Layer):
    """relu, leaky_relu (slope 0.2), elu, or prelu with one learned slope per channel.

    A prelu slope belongs to its kernel, like a bias, so it is kept per channel rather
    than per (group, channel); it starts at 0.25 (He et al. 2015). Any rank.
    """

    def __init__(self, activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.activation = arguments.one_of(activation, "activation", ACTIVATIONS)

    def build(self, input_shape):
        if self.activation == "prelu":
            self.alpha = self.add_weight(shape=(input_shape[-1],),
                                         initializer=keras.initializers.Constant(0.25),
                                         name="alpha")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def call(self, x):
        if self.activation == "relu":
            return ops.relu(x)
        if self.activation == "leaky_relu":
            return ops.leaky_relu(x, negative_slope=0.2)
        if self.activation == "elu":
            return ops.elu(x)
        return ops.maximum(x, 0.0) + self.alpha * ops.minimum(x, 0.0)

    def get_config(self):
        config = super().get_config()
        config.update(activation=self.activation)
        return config
