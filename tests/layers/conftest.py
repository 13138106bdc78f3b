"""Helpers of the layer tests: the generic layer check and backend-neutral gradients."""

import keras
import numpy as np
import pytest
from keras import ops


def _check_layer(layer, *args, expected_shape, trainable, non_trainable=0, **kwargs):
    """Calls ``layer``, checks its output shape and weight counts, and that its config
    survives ``get_config -> from_config -> get_config`` unchanged."""
    output = layer(*args, **kwargs)
    first = output[0] if isinstance(output, list) else output
    assert tuple(first.shape) == tuple(expected_shape)
    assert len(layer.trainable_weights) == trainable
    assert len(layer.non_trainable_weights) == non_trainable
    if hasattr(layer, "compute_output_shape") and args and args[0] is not None:
        shapes = ([tuple(a.shape) for a in args[0]] if isinstance(args[0], list)
                  else tuple(args[0].shape))
        computed = layer.compute_output_shape(shapes)
        computed = computed[0] if isinstance(computed, list) else computed
        assert tuple(computed) == tuple(expected_shape)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # The serialised form resolves back to the same class (registered with Keras).
    assert type(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))) is type(layer)
    return output


@pytest.fixture
def check_layer():
    return _check_layer


def _gradients(function, sources):
    """Gradients of the scalar ``function()`` with respect to ``sources`` (variables or
    tensors), as numpy arrays."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for source in sources:
                tape.watch(source.value if isinstance(source, keras.Variable) else source)
            value = function()
        grads = tape.gradient(value, [s.value if isinstance(s, keras.Variable) else s
                                      for s in sources])
    elif backend == "torch":
        import torch

        leaves = [s.value if isinstance(s, keras.Variable) else s for s in sources]
        for leaf in leaves:
            leaf.requires_grad_(True)
        grads = torch.autograd.grad(function(), leaves)
    else:
        pytest.skip(f"no gradient helper for the {backend} backend")
    return [ops.convert_to_numpy(g) for g in grads]


@pytest.fixture
def gradients():
    return _gradients


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
