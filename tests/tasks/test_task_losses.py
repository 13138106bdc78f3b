"""The registered losses: hand-computed values, numpy references, masking, precision."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from sfg_app.registry import LOSSES
from sfg_app.tasks import losses
from task_helpers import value_and_gradients

CLASS_LOSSES = ["ce", "dice", "dice_ce", "generalised_dice"]
VALUE_LOSSES = ["l1", "l2", "huber"]


def as_numpy(x):
    return float(ops.convert_to_numpy(x))


# ---- numpy references: the formulas written out on the counted voxels only ----

def log_softmax(x):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def reference(name, y_true, y_pred, weights):
    """The loss over the voxels whose weight is 1 (weights are 0/1 here)."""
    keep = weights > 0
    t, p = y_true[keep].astype(np.float64), y_pred[keep].astype(np.float64)
    if name in ("l1", "l2", "huber"):
        e = np.abs(p - t)
        per = {"l1": e, "l2": e ** 2,
               "huber": np.where(e <= 1.0, 0.5 * e ** 2, e - 0.5)}[name]
        return per.mean() if len(per) else 0.0
    logp = log_softmax(p)
    ce = -(t * logp).sum(-1).mean() if len(t) else 0.0
    prob = np.exp(logp)
    inter, vol = (prob * t).sum(0), prob.sum(0) + t.sum(0)
    dice = 1.0 - ((2 * inter[1:] + 1.0) / (vol[1:] + 1.0)).mean()
    if name == "ce":
        return ce
    if name == "dice":
        return dice
    if name == "dice_ce":
        return dice + ce
    true_vol = t.sum(0)
    w = np.zeros_like(true_vol)
    w[true_vol > 0] = 1.0 / true_vol[true_vol > 0] ** 2
    w[true_vol == 0] = w.max()
    den = (w * vol).sum()
    return 1.0 - 2.0 * (w * inter).sum() / den if den > 0 else 0.0


def random_case(rng, name, shape, classes=4):
    y_pred = rng.normal(0.0, 2.0, shape + (classes,)).astype("float32")
    if name in VALUE_LOSSES:
        y_true = rng.normal(0.0, 1.5, shape + (classes,)).astype("float32")
    else:
        labels = rng.integers(0, classes, shape)
        y_true = np.eye(classes, dtype="float32")[labels]
    weights = (rng.random(shape) > 0.4).astype("float32")
    return y_true, y_pred, weights


# ---- hand-computed values ----

def two_voxels():
    """Voxel 1: p = (1/4, 3/4), label 1. Voxel 2: p = (1/2, 1/2), label 0. Shape (1, 2, 1, 2)."""
    y_pred = np.array([0.0, math.log(3.0), 0.0, 0.0], "float32").reshape(1, 2, 1, 2)
    y_true = np.array([0.0, 1.0, 1.0, 0.0], "float32").reshape(1, 2, 1, 2)
    return y_true, y_pred, np.ones((1, 2, 1), "float32")


@pytest.mark.parametrize("name, expected", [
    ("ce", (math.log(4 / 3) + math.log(2)) / 2),
    # class 1: I = 3/4, P = 5/4, T = 1, smooth 1: 1 - (3/2 + 1) / (9/4 + 1)
    ("dice", 1 - 2.5 / 3.25),
    ("dice_ce", 1 - 2.5 / 3.25 + (math.log(4 / 3) + math.log(2)) / 2),
    # volumes 1 and 1 -> weights 1, 1: 1 - 2 (1/2 + 3/4) / ((3/4 + 1) + (5/4 + 1))
    ("generalised_dice", 0.375),
])
def test_class_losses_match_hand_computed_values(name, expected):
    assert as_numpy(LOSSES.get(name)(*two_voxels())) == pytest.approx(expected, rel=1e-6)


def test_dice_smoothing_and_background_options():
    y_true, y_pred, w = two_voxels()
    assert as_numpy(losses.dice(y_true, y_pred, w, smooth=0.0)) == pytest.approx(1 - 1.5 / 2.25)
    # class 0: I = 1/2, P = 3/4, T = 1 -> 1 / 1.75; class 1: 1.5 / 2.25
    both = losses.dice(y_true, y_pred, w, smooth=0.0, include_background=True)
    assert as_numpy(both) == pytest.approx(1 - (1 / 1.75 + 1.5 / 2.25) / 2)


def test_generalised_dice_gives_an_absent_class_the_largest_present_weight():
    # Three classes; class 2 absent from the truth. Volumes: class 0 one voxel, class 1
    # two voxels -> weights 1, 1/4, and 1 (the largest) for class 2.
    y_pred = np.zeros((1, 3, 1, 3), "float32")  # uniform probabilities 1/3
    y_true = np.eye(3, dtype="float32")[[0, 1, 1]].reshape(1, 3, 1, 3)
    # I = (1/3, 2/3, 0), P = (1, 1, 1), T = (1, 2, 0):
    # 1 - 2 (1/3 + 2/12) / ((1 + 1) + (1 + 2) / 4 + (1 + 0)) = 1 - 1 / 3.75
    expected = 1 - 1 / 3.75
    value = losses.generalised_dice(y_true, y_pred, np.ones((1, 3, 1), "float32"))
    assert np.isfinite(as_numpy(value))
    assert as_numpy(value) == pytest.approx(expected, rel=1e-6)


def test_value_losses_match_hand_computed_values():
    y_true = np.array([[0.0, 0.0], [0.0, 0.0]], "float32")  # two examples, two channels
    y_pred = np.array([[0.5, -3.0], [2.0, 0.0]], "float32")
    w = np.ones(2, "float32")
    assert as_numpy(losses.l1(y_true, y_pred, w)) == pytest.approx((3.5 / 2 + 2 / 2) / 2)
    assert as_numpy(losses.l2(y_true, y_pred, w)) == pytest.approx((9.25 / 2 + 4 / 2) / 2)
    # delta 1: 0.125, 2.5 | 1.5, 0
    assert as_numpy(losses.huber(y_true, y_pred, w)) == pytest.approx((2.625 / 2 + 1.5 / 2) / 2)
    # per-channel delta (4, 0.5): 0.125, 0.5*(3-0.25)=1.375 | 2.0, 0
    per_channel = losses.huber(y_true, y_pred, w, delta=[4.0, 0.5])
    assert as_numpy(per_channel) == pytest.approx((1.5 / 2 + 2.0 / 2) / 2)


# ---- against the numpy references on random data, 2D and 3D ----

@pytest.mark.parametrize("shape", [(2, 7, 6), (2, 5, 6, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", CLASS_LOSSES + VALUE_LOSSES)
def test_losses_match_numpy_reference_on_random_masked_data(name, shape):
    rng = np.random.default_rng(abs(hash((name, len(shape)))) % 2 ** 32)
    y_true, y_pred, weights = random_case(rng, name, shape)
    value = as_numpy(LOSSES.get(name)(y_true, y_pred, weights))
    assert value == pytest.approx(reference(name, y_true, y_pred, weights), rel=1e-5, abs=1e-6)


# ---- masked voxels and unavailable examples contribute nothing ----

@pytest.mark.parametrize("name", CLASS_LOSSES + VALUE_LOSSES)
def test_masked_voxels_change_neither_loss_nor_gradient(name):
    rng = np.random.default_rng(3)
    y_true, y_pred, _ = random_case(rng, name, (3, 6, 5, 4), classes=3)
    weights = np.zeros((3, 6, 5, 4), "float32")
    weights[0, 1:4, 1:5, :3] = 1.0          # a box in example 0
    weights[2, 2:6, 0:2, 1:4] = 1.0         # a box in example 2; example 1 unavailable
    poisoned = y_true.copy()
    poisoned[weights == 0] = np.nan         # targets outside must not even be read
    fn = LOSSES.get(name)
    value, (grad,) = value_and_gradients(lambda p: fn(poisoned, p, weights), y_pred)

    # The same loss on the valid data alone: the two boxes as a batch of two when they
    # have the same size, else flattened to voxels (identical for every loss here).
    keep = weights > 0
    cropped = fn(y_true[keep][None, :, None], y_pred[keep][None, :, None],
                 np.ones((1, keep.sum(), 1), "float32"))
    assert float(value) == pytest.approx(as_numpy(cropped), rel=1e-5)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~keep] == 0.0)
    assert np.abs(grad[keep]).max() > 0.0


@pytest.mark.parametrize("name", CLASS_LOSSES + VALUE_LOSSES)
def test_a_batch_with_nothing_available_gives_zero_and_finite_gradients(name):
    rng = np.random.default_rng(5)
    y_true, y_pred, _ = random_case(rng, name, (2, 4, 4, 3), classes=3)
    y_true[:] = np.nan
    weights = np.zeros((2, 4, 4, 3), "float32")
    fn = LOSSES.get(name)
    value, (grad,) = value_and_gradients(lambda p: fn(y_true, p, weights), y_pred)
    assert float(value) == 0.0
    assert np.all(grad == 0.0)


def test_an_example_level_loss_ignores_unavailable_examples():
    y_true = np.eye(3, dtype="float32")[[0, 2, 1]]
    y_pred = np.array([[3.0, 0, 0], [0, 0, 0], [1e4, -1e4, 0]], "float32")
    available = np.array([1.0, 1.0, 0.0], "float32")
    value = losses.cross_entropy(y_true, y_pred, available)
    expected = (-log_softmax(y_pred[0])[0] - log_softmax(y_pred[1])[2]) / 2
    assert as_numpy(value) == pytest.approx(expected, rel=1e-6)


# ---- precision: half-precision logits are cast inside ----

@pytest.mark.parametrize("dtype, offset", [("float16", 5e4), ("bfloat16", 1e30)])
@pytest.mark.parametrize("name", CLASS_LOSSES + VALUE_LOSSES)
def test_half_precision_outputs_do_not_overflow(name, dtype, offset):
    rng = np.random.default_rng(11)
    y_true, y_pred, weights = random_case(rng, name, (2, 6, 6, 3), classes=3)
    if name in CLASS_LOSSES:  # huge logits near the format's largest value
        y_pred = y_pred * 30.0 + np.float32(offset)
    half = ops.convert_to_numpy(ops.cast(ops.cast(y_pred, dtype), "float32"))
    fn = LOSSES.get(name)
    value, (grad,) = value_and_gradients(
        lambda p: fn(y_true, ops.cast(p, dtype), weights), y_pred)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    assert float(value) == pytest.approx(as_numpy(fn(y_true, half, weights)), rel=1e-5)


def test_losses_run_inside_a_compiled_graph():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("graph tracing checked on the TensorFlow backend")
    import tensorflow as tf
    rng = np.random.default_rng(2)
    for name in CLASS_LOSSES + VALUE_LOSSES:
        y_true, y_pred, weights = random_case(rng, name, (2, 5, 5, 4), classes=3)
        spec = [tf.TensorSpec([None, None, None, None, 3]),
                tf.TensorSpec([None, None, None, None, 3]),
                tf.TensorSpec([None, None, None, None])]
        graph = tf.function(LOSSES.get(name), input_signature=spec, jit_compile=False)
        assert float(graph(y_true, y_pred, weights)) == pytest.approx(
            as_numpy(LOSSES.get(name)(y_true, y_pred, weights)), rel=1e-6)


def test_weights_of_the_wrong_rank_are_rejected():
    with pytest.raises(ValueError, match=r"argument `weights`.*one axis fewer"):
        losses.l1(np.zeros((2, 3, 3, 1)), np.zeros((2, 3, 3, 1)), np.ones((2, 3, 3, 1)))
