"""Blocks: activation, conv block, residual unit, stage, task head, cross-stitch."""

import numpy as np
import pytest
from keras import ops

from sfg_app.errors import ConfigError
from sfg_app.layers.activations import ChannelActivation
from sfg_app.layers.blocks import ConvBlock, CrossStitch, ResidualUnit, Stage, TaskHead


def one_hot(indices, num_groups=3):
    return np.eye(num_groups, dtype=np.float32)[list(indices)]


@pytest.mark.parametrize("name, expected", [
    ("relu", lambda x: np.maximum(x, 0)),
    ("leaky_relu", lambda x: np.where(x > 0, x, 0.2 * x)),
    ("elu", lambda x: np.where(x > 0, x, np.expm1(x))),
    ("prelu", lambda x: np.where(x > 0, x, 0.25 * x)),
])
def test_activations(name, expected, check_layer, rng):
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    out = check_layer(ChannelActivation(name), x, expected_shape=x.shape,
                      trainable=int(name == "prelu"))
    np.testing.assert_allclose(ops.convert_to_numpy(out), expected(x), rtol=1e-5, atol=1e-6)


def test_activation_error():
    with pytest.raises(ConfigError, match=r"`activation`\. Expected one of relu, "
                                          r"leaky_relu, elu, prelu\. Received "
                                          r"activation='gelu'"):
        ChannelActivation("gelu")


def test_conv_block_generic(check_layer, rng):
    x = rng.normal(size=(2, 6, 6, 6, 2)).astype(np.float32)
    check_layer(ConvBlock(4, num_groups=3, activation="prelu"), x, groups_out=one_hot(
        [0, 1, 2, 2]), training=True, expected_shape=(2, 6, 6, 6, 4), trainable=4,
        non_trainable=2)
    check_layer(ConvBlock(4, norm_layer="none"), x, expected_shape=(2, 6, 6, 6, 4),
                trainable=2)


def test_residual_unit_generic_and_identity_at_zero_weights(check_layer, rng):
    x = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    groups = one_hot([0, 1, 2, 2])
    unit = ResidualUnit(dilation_rate=2, num_groups=3, impl="reference")
    check_layer(unit, x, groups=groups, expected_shape=x.shape, trainable=6,
                non_trainable=4)
    for conv in unit.convs:
        conv.kernel.assign(np.zeros(conv.kernel.shape, np.float32))
    np.testing.assert_allclose(ops.convert_to_numpy(unit(x, groups=groups)), x)


def test_residual_unit_keeps_channels_in_their_groups(rng):
    """With mixed routing, a shared channel's output ignores specialist channels."""
    x = rng.normal(size=(1, 6, 6, 4)).astype(np.float32)
    groups = one_hot([0, 1, 2, 2])
    unit = ResidualUnit(num_groups=3)
    base = ops.convert_to_numpy(unit(x, groups=groups))
    bumped = x.copy()
    bumped[..., 0] += 5.0
    out = ops.convert_to_numpy(unit(bumped, groups=groups))
    np.testing.assert_array_equal(out[..., 1:], base[..., 1:])
    assert not np.allclose(out[..., 0], base[..., 0])


def test_stage_pools_and_counts_its_units(check_layer, rng):
    x = rng.normal(size=(1, 7, 9, 3)).astype(np.float32)
    stage = Stage(4, residual_units=2, dilation_rate=2, pool=True, num_groups=3,
                  norm_layer="instance")
    check_layer(stage, x, groups_out=one_hot([0, 1, 2, 0]), expected_shape=(1, 4, 5, 4),
                trainable=1 + 2 + 2 * (2 * 2 + 2))
    assert len(stage.units) == 2 and stage.units[0].dilation_rate == 2


def test_stage_argument_errors():
    with pytest.raises(ConfigError, match=r"`residual_units`\. Expected an integer >= 0\. "
                                          r"Received residual_units=-1"):
        Stage(4, residual_units=-1)
    with pytest.raises(ConfigError, match=r"`norm_layer`\. Expected one of batch, "
                                          r"instance, none"):
        Stage(4, norm_layer="layer")


@pytest.mark.parametrize("kind, shape", [("voxel", (2, 5, 5, 5, 6)), ("image", (2, 6))])
def test_task_head_reads_its_task_and_the_shared_group(kind, shape, check_layer, rng):
    x = rng.normal(size=(2, 5, 5, 5, 6)).astype(np.float32)
    groups = one_hot([0, 0, 1, 1, 2, 2])
    head = TaskHead(6, kind, task_index=1)
    base = ops.convert_to_numpy(check_layer(head, x, groups=groups, expected_shape=shape,
                                            trainable=2))
    for channel, changes in ((0, False), (2, True), (5, True)):
        bumped = x.copy()
        bumped[..., channel] += 3.0
        out = ops.convert_to_numpy(head(bumped, groups=groups))
        assert (not np.array_equal(out, base)) == changes
    per_example = np.stack([groups, one_hot([1, 1, 0, 0, 2, 2])])
    out = ops.convert_to_numpy(head(x, groups=per_example))
    np.testing.assert_allclose(out[:1], ops.convert_to_numpy(head(x[:1], groups=groups)),
                               rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32


def test_task_head_is_float32_under_mixed_precision(rng):
    head = TaskHead(3, dtype="mixed_bfloat16")
    assert head.compute_dtype == "float32"
    x = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    assert ops.convert_to_numpy(head(ops.cast(x, "bfloat16"))).dtype == np.float32


def test_task_head_errors(rng):
    with pytest.raises(ConfigError, match=r"`kind`\. Expected one of voxel, image"):
        TaskHead(2, "pixel")
    with pytest.raises(ConfigError, match=r"`channels`\. Expected a strictly positive"):
        TaskHead(0)
    head = TaskHead(2, task_index=2)
    with pytest.raises(ValueError, match=r"reads task group 2, but the masks have 3 groups"):
        head(rng.normal(size=(1, 3, 3, 2)).astype(np.float32), groups=one_hot([0, 1]))


def test_cross_stitch_mixes_columns_per_channel(check_layer, rng):
    columns = [rng.normal(size=(2, 4, 4, 3)).astype(np.float32) for _ in range(3)]
    stitch = CrossStitch(same=0.8)
    out = check_layer(stitch, columns, expected_shape=(2, 4, 4, 3), trainable=1)
    np.testing.assert_allclose(ops.convert_to_numpy(out[0]),
                               0.8 * columns[0] + 0.1 * columns[1] + 0.1 * columns[2],
                               rtol=1e-5)
    alpha = rng.uniform(size=(3, 3, 3)).astype(np.float32)
    stitch.alpha.assign(alpha)
    out = stitch(columns)
    expected = sum(alpha[2, s] * columns[s] for s in range(3))
    np.testing.assert_allclose(ops.convert_to_numpy(out[2]), expected, rtol=1e-5)


def test_cross_stitch_errors(rng):
    with pytest.raises(ConfigError, match=r"`same`\. Expected a number in \(0, 1\]"):
        CrossStitch(same=1.5)
    with pytest.raises(ValueError, match=r"at least 2 tensors with equal channels"):
        CrossStitch()([rng.normal(size=(1, 3, 3, 2)), rng.normal(size=(1, 3, 3, 4))])
