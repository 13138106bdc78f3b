"""Backend-neutral helpers for the task tests (also run in a torch subprocess)."""

from __future__ import annotations

import numpy as np
import keras


def value_and_gradients(fn, *arrays):
    """``fn(*tensors)`` and its gradient with respect to each array, as numpy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        tensors = [tf.convert_to_tensor(a) for a in arrays]
        with tf.GradientTape() as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
        return np.asarray(value), [np.asarray(g, dtype=np.float64) for g in grads]
    if backend == "torch":
        import torch
        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors)
        return (value.detach().cpu().numpy(),
                [g.detach().float().cpu().numpy().astype(np.float64) for g in grads])
    if backend == "jax":
        import jax
        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(arrays))))(*arrays)
        return np.asarray(value), [np.asarray(g, dtype=np.float64) for g in grads]
    raise NotImplementedError(backend)


def objective_case() -> dict:
    """A three-task objective on fixed random data: its value and a few gradients.

    Run in-process and in a ``KERAS_BACKEND=torch`` subprocess; the two must agree.
    """
    from keras import ops
    from sfg_app.tasks.classification import ClassificationTask
    from sfg_app.tasks.regression import RegressionTask
    from sfg_app.tasks.segmentation import SegmentationTask
    from sfg_app.tasks.weighting import UncertaintyWeighting

    rng = np.random.default_rng(42)
    seg = SegmentationTask("organs", "LABEL", num_classes=3, loss="dice_ce", mask="BODY",
                           optional_target=True)
    ct = RegressionTask("ct", "CT", loss="huber", huber_delta=0.05, target_shift=-1000.0,
                        target_scale=1000.0, mask="BODY")
    sex = ClassificationTask("sex", "SEX", num_classes=2, optional_target=True)
    labels = rng.integers(0, 3, (2, 6, 5, 4, 1)).astype("float32")
    ct_true = rng.normal(-500.0, 400.0, (2, 6, 5, 4, 1)).astype("float32")
    mask = (rng.random((2, 6, 5, 4, 1)) > 0.3).astype("float32")
    available = np.array([1.0, 0.0], "float32")
    sex_true = np.array([1.0, 0.0], "float32")
    seg_out = rng.normal(size=(2, 6, 5, 4, 3)).astype("float32")
    ct_out = rng.normal(size=(2, 6, 5, 4, 1)).astype("float32")
    sex_out = rng.normal(size=(2, 2)).astype("float32")
    weighting = UncertaintyWeighting(["organs", "ct", "sex"], initial_log_variance=0.25)
    weighting.build()

    def objective(seg_logits, ct_values, sex_logits):
        losses = {"organs": seg.loss(labels, seg_logits, mask, available),
                  "ct": ct.loss(ct_true, ct_values, mask),
                  "sex": sex.loss(sex_true, sex_logits, available=available)}
        return weighting(losses)

    value, grads = value_and_gradients(objective, seg_out, ct_out, sex_out)
    metrics = {**seg.metrics(labels, seg_out, mask, available),
               **ct.metrics(ct_true, ct_out, mask),
               **sex.metrics(sex_true, sex_out, available=available)}
    return {"backend": keras.backend.backend(), "objective": float(value),
            "grad_norms": [float(np.linalg.norm(g)) for g in grads],
            "grad_unavailable_max": float(np.abs(grads[0][1]).max() + np.abs(grads[2][1]).max()),
            "metrics": {k: float(ops.convert_to_numpy(v)) for k, v in metrics.items()}}
