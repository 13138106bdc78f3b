"""The SFG convolution: fused and reference agree, routing follows the connectivity."""

import numpy as np
import pytest
from keras import ops

from sfg_app.errors import ConfigError
from sfg_app.layers.grouping import connectivity_matrix
from sfg_app.layers.sfg_conv import SFGConv


def one_hot_masks(rng, channels, num_groups, batch=None):
    """Random one-hot masks in which every group has at least one channel."""
    shape = (channels,) if batch is None else (batch, channels)
    groups = rng.integers(0, num_groups, size=shape)
    groups[..., :num_groups] = np.arange(num_groups)
    return np.eye(num_groups, dtype=np.float32)[groups]


def built(impl, filters, input_shape, kernel_size=3, dilation_rate=1, seed=0, **kwargs):
    layer = SFGConv(filters, kernel_size, dilation_rate, impl=impl, **kwargs)
    layer.build(input_shape)
    layer.kernel.assign(np.random.default_rng(seed).normal(
        size=layer.kernel.shape).astype(np.float32))
    return layer


def relative_difference(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


CASES = [  # spatial shape, tasks, connectivity, dilation
    ((9, 10), 2, "mixed", 1),
    ((9, 10), 3, "separate", 2),
    ((6, 7, 5), 2, "mixed", 2),
    ((6, 7, 5), 3, "dense", 1),
    ((6, 7, 5), 3, "mixed", 1),
]


@pytest.mark.parametrize("spatial, tasks, connectivity, dilation", CASES)
@pytest.mark.parametrize("first_layer", [False, True])
def test_fused_equals_reference_outputs_and_gradients(spatial, tasks, connectivity, dilation,
                                                       first_layer, rng, gradients):
    num_groups, c_in, c_out = tasks + 1, 7, 8
    shape = (2,) + spatial + (c_in,)
    x = ops.convert_to_tensor(rng.normal(size=shape).astype(np.float32))
    groups_in = None if first_layer else one_hot_masks(rng, c_in, num_groups)
    groups_out = one_hot_masks(rng, c_out, num_groups)
    upstream = ops.convert_to_tensor(rng.normal(size=shape[:-1] + (c_out,))
                                     .astype(np.float32))
    results = {}
    for impl in ("fused", "reference"):
        layer = built(impl, c_out, shape, dilation_rate=dilation, seed=3,
                      connectivity=connectivity)
        run = lambda: layer(x, groups_in=groups_in, groups_out=groups_out)  # noqa: E731
        output = ops.convert_to_numpy(run())
        grads = gradients(lambda: ops.sum(run() * upstream), [layer.kernel, x])
        results[impl] = [output] + grads
    for fused, reference in zip(results["fused"], results["reference"]):
        assert relative_difference(fused, reference) < 1e-5


def test_soft_masks_also_agree(rng):
    """Any masks constant over space agree: the convolution is linear."""
    shape = (1, 8, 8, 5)
    x = rng.normal(size=shape).astype(np.float32)
    groups_in = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
    groups_out = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
    fused, reference = (ops.convert_to_numpy(built(impl, 6, shape)(
        x, groups_in=groups_in, groups_out=groups_out)) for impl in ("fused", "reference"))
    assert relative_difference(fused, reference) < 1e-5


def test_fused_weight_is_the_routed_mask(rng):
    """conv(x, W * (m_in C m_out^T)) written out with the plain convolution."""
    shape = (1, 6, 6, 6, 4)
    x = rng.normal(size=shape).astype(np.float32)
    groups_in, groups_out = one_hot_masks(rng, 4, 3), one_hot_masks(rng, 5, 3)
    layer = built("fused", 5, shape)
    routing = groups_in @ connectivity_matrix("mixed", 3) @ groups_out.T
    expected = ops.conv(x, ops.convert_to_numpy(layer.kernel) * routing, padding="same")
    np.testing.assert_allclose(ops.convert_to_numpy(
        layer(x, groups_in=groups_in, groups_out=groups_out)),
        ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-5)


def test_mixed_routing_isolates_specialists(rng):
    """Task-0 input channels reach task-0 kernels only; shared channels reach all."""
    shape = (1, 7, 7, 6)
    groups_in = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]
    groups_out = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    layer = built("fused", 6, shape)
    x = rng.normal(size=shape).astype(np.float32)
    base = ops.convert_to_numpy(layer(x, groups_in=groups_in, groups_out=groups_out))
    for channel, changed_groups in ((0, {0}), (2, {1}), (4, {0, 1, 2})):
        bumped = x.copy()
        bumped[..., channel] += 10.0
        out = ops.convert_to_numpy(layer(bumped, groups_in=groups_in,
                                         groups_out=groups_out))
        changed = {int(np.argmax(groups_out[k])) for k in range(6)
                   if not np.array_equal(out[..., k], base[..., k])}
        assert changed == changed_groups


def test_dense_and_first_layer_forms_are_the_plain_convolution(rng):
    shape = (2, 5, 5, 5, 3)
    x = rng.normal(size=shape).astype(np.float32)
    layer = built("fused", 4, shape, dilation_rate=2)
    plain = ops.convert_to_numpy(ops.conv(x, layer.kernel, padding="same", dilation_rate=2))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), plain, rtol=1e-5, atol=1e-5)
    first = layer(x, groups_out=one_hot_masks(rng, 4, 3))
    np.testing.assert_allclose(ops.convert_to_numpy(first), plain, rtol=1e-5, atol=1e-5)


def test_reference_takes_per_example_masks_and_fused_refuses_them(rng):
    shape = (3, 6, 6, 4)
    x = rng.normal(size=shape).astype(np.float32)
    groups_in = one_hot_masks(rng, 4, 3, batch=3)
    groups_out = one_hot_masks(rng, 5, 3, batch=3)
    reference = built("reference", 5, shape, use_bias=True)
    out = ops.convert_to_numpy(reference(x, groups_in=groups_in, groups_out=groups_out))
    fused = built("fused", 5, shape, use_bias=True)
    for b in range(3):
        one = fused(x[b:b + 1], groups_in=groups_in[b], groups_out=groups_out[b])
        np.testing.assert_allclose(out[b:b + 1], ops.convert_to_numpy(one), rtol=1e-5,
                                   atol=1e-5)
    with pytest.raises(ValueError, match=r"impl='fused', which cannot take per-example "
                                         r"groups.*Use impl='reference'"):
        fused(x, groups_in=groups_in, groups_out=groups_out)


def test_sfg_conv_generic(check_layer, rng):
    x = rng.normal(size=(2, 6, 6, 6, 3)).astype(np.float32)
    masks = one_hot_masks(rng, 5, 3)
    check_layer(SFGConv(5, 3, 2, connectivity="separate", impl="reference", use_bias=True),
                x, groups_out=masks, expected_shape=(2, 6, 6, 6, 5), trainable=2)
    check_layer(SFGConv(5, kernel_size=1), x[:, 0], expected_shape=(2, 6, 6, 5),
                trainable=1)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(filters=0), r"`filters`\. Expected a strictly positive integer\. Received "
                      r"filters=0"),
    (dict(filters=4, kernel_size=2.5), r"`kernel_size`\. Expected a strictly positive"),
    (dict(filters=4, dilation_rate=0), r"`dilation_rate`\. Expected a strictly positive"),
    (dict(filters=4, impl="fast"), r"`impl`\. Expected one of fused, reference\. "
                                   r"Received impl='fast'"),
    (dict(filters=4, connectivity="all"), r"`connectivity`\. Expected one of mixed"),
    (dict(filters=4, use_bias=1), r"`use_bias`\. Expected True or False"),
])
def test_sfg_conv_argument_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        SFGConv(**kwargs)


def test_sfg_conv_call_errors(rng):
    x = rng.normal(size=(1, 5, 5, 3)).astype(np.float32)
    layer = SFGConv(4)
    with pytest.raises(ValueError, match=r"`groups_out`\. Expected masks of shape \(4, G\) "
                                         r"or \(batch, 4, G\)\. Received groups_out of "
                                         r"shape \(5, 3\)"):
        layer(x, groups_out=one_hot_masks(rng, 5, 3))
    with pytest.raises(ValueError, match=r"`groups_in`\. Expected masks of shape \(3, 3\)"):
        layer(x, groups_in=one_hot_masks(rng, 3, 2), groups_out=one_hot_masks(rng, 4, 3))
    with pytest.raises(ValueError, match=r"`groups_in` was given without `groups_out`"):
        layer(x, groups_in=one_hot_masks(rng, 3, 3))
    with pytest.raises(ValueError, match=r"Expected \(batch, \*spatial, channels\) with 2 "
                                         r"or 3 spatial axes"):
        SFGConv(4)(np.zeros((2, 5, 3), np.float32))
