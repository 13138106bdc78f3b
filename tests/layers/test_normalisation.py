"""Group-wise normalisation: one normalisation, statistics per (group, channel)."""

import keras
import numpy as np
import pytest
from keras import ops

from sfg_app.errors import ConfigError
from sfg_app.layers.normalisation import GroupwiseNormalization


def built(num_groups, method="batch", shape=(4, 5, 6, 3), **kwargs):
    layer = GroupwiseNormalization(num_groups, method, **kwargs)
    layer.build(shape)
    return layer


def numpy_of(layer, name):
    return ops.convert_to_numpy(getattr(layer, name))


def test_without_groups_it_is_keras_batch_normalization(rng):
    x = rng.normal(2.0, 3.0, size=(4, 5, 6, 3)).astype(np.float32)
    ours = built(1, momentum=0.9)
    theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    theirs.build(x.shape)
    for layer in (ours, theirs):
        layer.gamma.assign(np.reshape([0.5, 1.5, 2.0], layer.gamma.shape))
        layer.beta.assign(np.reshape([0.1, -0.2, 0.3], layer.beta.shape))
    for training in (True, False):
        np.testing.assert_allclose(ops.convert_to_numpy(ours(x, training=training)),
                                   ops.convert_to_numpy(theirs(x, training=training)),
                                   rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(numpy_of(ours, "moving_mean")[0],
                               numpy_of(theirs, "moving_mean"), rtol=1e-5)
    np.testing.assert_allclose(numpy_of(ours, "moving_variance")[0],
                               numpy_of(theirs, "moving_variance"), rtol=1e-4)


def test_training_uses_channel_moments_and_the_group_parameters(rng):
    x = rng.normal(1.0, 2.0, size=(3, 4, 4, 4, 3)).astype(np.float32)
    groups = np.eye(3, dtype=np.float32)[[2, 0, 1]]       # channel c in group g(c)
    layer = built(3, shape=x.shape)
    gamma = rng.uniform(0.5, 2.0, size=(3, 3)).astype(np.float32)
    beta = rng.normal(size=(3, 3)).astype(np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    out = ops.convert_to_numpy(layer(x, groups=groups, training=True))
    mean, var = x.mean(axis=(0, 1, 2, 3)), x.var(axis=(0, 1, 2, 3))
    g = [2, 0, 1]
    expected = ((x - mean) / np.sqrt(var + 1e-3) * gamma[g, [0, 1, 2]]
                + beta[g, [0, 1, 2]])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_moving_statistics_move_only_in_the_current_group_row(rng):
    x = rng.normal(5.0, 2.0, size=(4, 6, 6, 2)).astype(np.float32)
    layer = built(3, shape=x.shape, momentum=0.5)
    layer(x, groups=np.eye(3, dtype=np.float32)[[1, 2]], training=True)
    moving_mean = numpy_of(layer, "moving_mean")
    moving_var = numpy_of(layer, "moving_variance")
    np.testing.assert_allclose(moving_mean[[1, 2], [0, 1]], 0.5 * x.mean(axis=(0, 1, 2)),
                               rtol=1e-5)
    np.testing.assert_allclose(moving_var[[1, 2], [0, 1]],
                               0.5 + 0.5 * x.var(axis=(0, 1, 2)), rtol=1e-4)
    untouched = np.ones((3, 2), bool)
    untouched[[1, 2], [0, 1]] = False
    np.testing.assert_array_equal(moving_mean[untouched], 0.0)
    np.testing.assert_array_equal(moving_var[untouched], 1.0)


def test_inference_picks_each_channel_groups_moving_statistics(rng):
    x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    layer = built(3, shape=x.shape)
    layer.moving_mean.assign(np.array([[1, 2], [3, 4], [5, 6]], np.float32))
    layer.moving_variance.assign(np.array([[1, 4], [9, 16], [25, 36]], np.float32))
    groups = np.eye(3, dtype=np.float32)[[2, 1]]
    out = ops.convert_to_numpy(layer(x, groups=groups, training=False))
    expected = (x - np.array([5, 4])) / np.sqrt(np.array([25, 16]) + 1e-3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    expected_soft = ops.convert_to_numpy(layer(x, groups=np.full((2, 3), 1 / 3, np.float32)))
    mixed_mean, mixed_var = np.array([3, 4]), np.array([35 / 3, 56 / 3])
    np.testing.assert_allclose(expected_soft, (x - mixed_mean) / np.sqrt(mixed_var + 1e-3),
                               rtol=1e-5, atol=1e-5)


def test_per_example_groups_pool_the_examples_of_each_group(rng):
    x = rng.normal(size=(4, 6, 6, 2)).astype(np.float32)
    x[2:] += 10.0                                        # examples 2, 3 differ a lot
    assignment = np.array([[0, 1], [0, 1], [1, 1], [1, 0]])  # (example, channel) -> group
    groups = np.eye(2, dtype=np.float32)[assignment]
    layer = built(2, shape=x.shape, momentum=0.0)
    out = ops.convert_to_numpy(layer(x, groups=groups, training=True))
    expected = np.empty_like(x)
    for c in range(2):
        for g in range(2):
            members = assignment[:, c] == g
            values = x[members, ..., c]
            expected[members, ..., c] = (values - values.mean()) / np.sqrt(values.var() + 1e-3)
            np.testing.assert_allclose(numpy_of(layer, "moving_mean")[g, c], values.mean(),
                                       rtol=1e-4)
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


def test_instance_normalisation_is_per_example_in_training_and_inference(rng):
    x = rng.normal(3.0, 2.0, size=(3, 4, 5, 6, 2)).astype(np.float32)
    layer = built(3, "instance", shape=x.shape)
    layer.gamma.assign(np.array([[1, 1], [2, 2], [3, 3]], np.float32))
    groups = np.eye(3, dtype=np.float32)[[1, 2]]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-3) * np.array([2, 3])
    for training in (True, False):
        np.testing.assert_allclose(ops.convert_to_numpy(layer(x, groups=groups,
                                                              training=training)),
                                   expected, rtol=1e-4, atol=1e-4)
    assert not hasattr(layer, "moving_mean")


def test_mixed_precision_output_dtype_and_float32_statistics(rng):
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    layer = GroupwiseNormalization(2, dtype="mixed_bfloat16")
    out = layer(x, groups=np.eye(2, dtype=np.float32)[[0, 1, 1]], training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert layer.moving_mean.dtype == "float32"


def test_groupwise_normalization_generic(check_layer, rng):
    x = rng.normal(size=(2, 4, 4, 4, 5)).astype(np.float32)
    groups = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 5)]
    check_layer(GroupwiseNormalization(3), x, groups=groups, training=True,
                expected_shape=x.shape, trainable=2, non_trainable=2)
    check_layer(GroupwiseNormalization(method="instance"), x, expected_shape=x.shape,
                trainable=2)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(num_groups=0), r"`num_groups`\. Expected a strictly positive integer"),
    (dict(method="group"), r"`method`\. Expected one of batch, instance\. Received "
                           r"method='group'"),
    (dict(momentum=1.0), r"`momentum`\. Expected a number in \[0, 1\)"),
    (dict(epsilon=0), r"`epsilon`\. Expected a finite number > 0"),
])
def test_groupwise_normalization_argument_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        GroupwiseNormalization(**kwargs)


def test_groupwise_normalization_call_errors(rng):
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"num_groups=3 and needs the `groups` masks"):
        GroupwiseNormalization(3)(x)
    with pytest.raises(ValueError, match=r"`groups`\. Expected masks of shape \(3, 3\)"):
        GroupwiseNormalization(3)(x, groups=np.eye(2, dtype=np.float32)[[0, 1, 1]])


@pytest.mark.parametrize("method", ["batch", "instance"])
def test_shared_norm_parameters_hold_one_scale_and_offset_per_channel(method, rng):
    """One (1, C) scale and offset whatever the groups; moving statistics stay per group."""
    layer = built(3, method, shared_norm_parameters=True)
    assert tuple(layer.gamma.shape) == tuple(layer.beta.shape) == (1, 3)
    if method == "batch":
        assert tuple(layer.moving_mean.shape) == (3, 3)
    layer.gamma.assign([[2.0, 3.0, 4.0]])
    layer.beta.assign([[0.5, -0.5, 1.0]])
    x = rng.normal(size=(4, 5, 6, 3)).astype("float32")
    one = np.eye(3, dtype="float32")
    outputs = [ops.convert_to_numpy(layer(x, groups=one[order], training=True))
               for order in ([0, 1, 2], [2, 2, 0])]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    assert GroupwiseNormalization.from_config(layer.get_config()).shared_norm_parameters
