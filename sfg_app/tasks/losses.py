"""The task losses registered by name in `sfg_app.registry.LOSSES`.

Every loss has one signature, ``fn(y_true, y_pred, weights, **options) -> scalar``:

- ``y_pred``: the network output for the task, channels last: ``(B, *spatial, K)`` for
  a voxel-level task (two or three spatial axes) or ``(B, K)`` for an image-level one.
  Logits for the class losses, values for the regression losses. Any float dtype: it is
  cast to float32 here, so float16/bfloat16 outputs of a mixed-precision network cannot
  overflow in the softmax or the sums.
- ``y_true``: the same shape as ``y_pred``. Class probabilities (one-hot, or soft) for
  the class losses; target values in the network's (normalised) units for the regression
  losses.
- ``weights``: float, shape ``y_pred.shape[:-1]``: ``(B, *spatial)`` or ``(B,)``. The
  weight of each voxel (or example): the product of the task's mask and of the example's
  availability, 0 where it must contribute nothing.

A voxel with weight 0 changes neither the loss nor any gradient, even when its target is
NaN (targets are replaced by 0 there before use). When every weight is 0 (no example of
the batch has the target) the loss is 0 with zero gradients, never NaN. All reductions
use ``keras.ops`` only, without Python branches on tensor values, so the losses run on
any Keras backend and inside compiled graphs.
"""

from __future__ import annotations

from sfg_app.tasks.keras_ops import ops


def weighted_mean(values, weights):
    """Mean of ``values`` weighted by ``weights`` (same shape); 0 when the weights sum to 0."""
    total = ops.sum(weights)
    return ops.sum(values * weights) / ops.where(total > 0, total, 1.0)


def _prepare(y_true, y_pred, weights):
    """float32 tensors, with the targets of uncounted voxels replaced by 0."""
    y_pred = ops.cast(y_pred, "float32")
    weights = ops.cast(weights, "float32")
    if len(weights.shape) != len(y_pred.shape) - 1:
        raise ValueError(
            "Invalid shape for argument `weights`. Expected one axis fewer than "
            f"`y_pred` (the shape of y_pred without its channel axis). Received "
            f"weights.shape={tuple(weights.shape)}, y_pred.shape={tuple(y_pred.shape)}.")
    counted = ops.expand_dims(ops.greater(weights, 0.0), -1)
    y_true = ops.where(counted, ops.cast(y_true, "float32"), 0.0)
    return y_true, y_pred, weights


def cross_entropy(y_true, y_pred, weights):
    """Softmax cross entropy from logits, averaged over the weighted voxels.

    ``log_softmax`` is computed as ``x - logsumexp(x)``, stable for any logit range.
    """
    y_true, y_pred, weights = _prepare(y_true, y_pred, weights)
    per_voxel = -ops.sum(y_true * ops.log_softmax(y_pred, axis=-1), axis=-1)
    return weighted_mean(per_voxel, weights)


def _class_overlaps(y_true, y_pred, weights):
    """Per class: the weighted soft intersection and the sum of the two volumes.

    Pooled over the whole batch (every spatial axis and every example): one Dice per
    class for the batch, which stays defined when a small window lacks a class.
    """
    probabilities = ops.softmax(y_pred, axis=-1)
    w = ops.expand_dims(weights, -1)
    axes = tuple(range(len(y_pred.shape) - 1))
    intersection = ops.sum(w * probabilities * y_true, axis=axes)
    predicted = ops.sum(w * probabilities, axis=axes)
    true = ops.sum(w * y_true, axis=axes)
    return intersection, predicted, true


def dice(y_true, y_pred, weights, smooth=1.0, include_background=False):
    """Soft Dice loss, ``1 - mean_c (2 I_c + s) / (P_c + T_c + s)``, from logits.

    ``smooth`` (s) is added to numerator and denominator, in voxels: a class absent from
    both truth and prediction scores 1 instead of 0/0, and one voxel's worth barely
    biases the classes of real structures (thousands of voxels in a window). The
    background class (0) is left out of the mean by default: cross entropy (``dice_ce``)
    or ``include_background=True`` covers it.
    """
    y_true, y_pred, weights = _prepare(y_true, y_pred, weights)
    intersection, predicted, true = _class_overlaps(y_true, y_pred, weights)
    scores = (2.0 * intersection + smooth) / (predicted + true + smooth)
    if not include_background:
        scores = scores[1:]
    return 1.0 - ops.mean(scores)


def dice_cross_entropy(y_true, y_pred, weights, smooth=1.0, include_background=False):
    """Soft Dice plus cross entropy, with equal weights (NiftyNet's ``dice_plus_xent``)."""
    return (dice(y_true, y_pred, weights, smooth=smooth,
                 include_background=include_background)
            + cross_entropy(y_true, y_pred, weights))


def generalised_dice(y_true, y_pred, weights):
    """Generalised Dice loss (Sudre et al. 2017), class weights ``1 / volume^2``.

    ``1 - 2 sum_c w_c I_c / sum_c w_c (P_c + T_c)``, with the true volume of a class
    counted over the weighted voxels of the batch. A class absent from the batch's truth
    would get an infinite weight; it gets the largest weight of the present classes
    instead (MONAI's rule), so that predicting it is still penalised. No smoothing term
    is needed: the denominator is positive whenever any class is present, and the loss
    is 0 when no voxel counts.
    """
    y_true, y_pred, weights = _prepare(y_true, y_pred, weights)
    intersection, predicted, true = _class_overlaps(y_true, y_pred, weights)
    present = ops.greater(true, 0.0)
    class_weights = ops.where(present, 1.0 / ops.square(ops.where(present, true, 1.0)), 0.0)
    class_weights = ops.where(present, class_weights, ops.max(class_weights))
    numerator = 2.0 * ops.sum(class_weights * intersection)
    denominator = ops.sum(class_weights * (predicted + true))
    counted = ops.greater(denominator, 0.0)
    return ops.where(counted, 1.0 - numerator / ops.where(counted, denominator, 1.0), 0.0)


def l1(y_true, y_pred, weights):
    """Mean absolute error (channels averaged per voxel)."""
    y_true, y_pred, weights = _prepare(y_true, y_pred, weights)
    return weighted_mean(ops.mean(ops.abs(y_pred - y_true), axis=-1), weights)


def l2(y_true, y_pred, weights):
    """Mean squared error (channels averaged per voxel)."""
    y_true, y_pred, weights = _prepare(y_true, y_pred, weights)
    return weighted_mean(ops.mean(ops.square(y_pred - y_true), axis=-1), weights)


def huber(y_true, y_pred, weights, delta=1.0):
    """Huber loss: quadratic within ``delta`` of the target, linear beyond.

    ``0.5 e^2`` for ``|e| <= delta``, ``delta (|e| - 0.5 delta)`` beyond; ``delta`` is in
    the units of ``y_pred`` and is a scalar or one value per channel.
    """
    y_true, y_pred, weights = _prepare(y_true, y_pred, weights)
    delta = ops.cast(delta, "float32")
    error = ops.abs(y_pred - y_true)
    quadratic = ops.minimum(error, delta)
    per_channel = 0.5 * ops.square(quadratic) + delta * (error - quadratic)
    return weighted_mean(ops.mean(per_channel, axis=-1), weights)
