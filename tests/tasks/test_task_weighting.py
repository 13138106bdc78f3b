"""Fixed and homoscedastic-uncertainty weighting of the task losses."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from sfg_app.tasks.weighting import UncertaintyWeighting, fixed_weighting
from task_helpers import objective_case, value_and_gradients


def test_uncertainty_weighting_value_and_gradient_with_respect_to_s():
    s = np.array([0.7, -0.3, 0.0], "float32")
    task_losses = np.array([2.5, 0.4, 1.0], "float32")
    layer = UncertaintyWeighting(["organs", "ct", "sex"])
    layer.build()

    value = layer({"organs": ops.convert_to_tensor(2.5), "ct": ops.convert_to_tensor(0.4),
                   "sex": ops.convert_to_tensor(1.0)})
    assert float(ops.convert_to_numpy(value)) == pytest.approx(3.9, rel=1e-6)  # s = 0

    layer.log_variances.assign(s)
    losses = {n: ops.convert_to_tensor(v) for n, v in zip(layer.task_names, task_losses)}
    grads = _gradient_wrt_layer_weights(layer, losses)
    np.testing.assert_allclose(grads, 1.0 - np.exp(-s) * task_losses, rtol=1e-5)
    _, (d_losses,) = value_and_gradients(
        lambda v: layer({n: v[i] for i, n in enumerate(layer.task_names)}), task_losses)
    np.testing.assert_allclose(d_losses, np.exp(-s), rtol=1e-6)


def _gradient_wrt_layer_weights(layer, losses):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        with tf.GradientTape() as tape:
            total = layer(losses)
        return tape.gradient(total, layer.log_variances.value).numpy()
    if backend == "torch":
        import torch
        total = layer(losses)
        (grad,) = torch.autograd.grad(total, [layer.log_variances.value])
        return grad.numpy()
    pytest.skip(f"no gradient helper for {backend}")


def test_uncertainty_weighting_serialises_and_stays_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = UncertaintyWeighting(["a", "b"], initial_log_variance=0.5, name="tasks")
        layer.build()
        assert layer.log_variances.dtype == "float32"
        half = {"a": ops.convert_to_tensor(3000.0, "float16"),
                "b": ops.convert_to_tensor(0.5, "float16")}
        total = layer(half)
        assert ops.convert_to_numpy(total).dtype == np.float32
        assert float(ops.convert_to_numpy(total)) == pytest.approx(np.exp(-0.5) * 3000.5 + 1.0,
                                                                   rel=1e-6)
    finally:
        keras.config.set_dtype_policy(previous)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, UncertaintyWeighting)
    assert restored.get_config() == layer.get_config()
    assert restored.task_names == ("a", "b")


def test_uncertainty_weighting_rejects_bad_names_and_missing_losses():
    with pytest.raises(ValueError, match=r"`task_names`.*distinct.*\['a', 'a'\]"):
        UncertaintyWeighting(["a", "a"])
    with pytest.raises(ValueError, match=r"`task_names`"):
        UncertaintyWeighting("ab")
    layer = UncertaintyWeighting(["a", "b"])
    with pytest.raises(ValueError, match=r"Missing the loss of task\(s\) \['b'\]"):
        layer({"a": ops.convert_to_tensor(1.0)})


def test_fixed_weighting_is_the_weighted_sum():
    total = fixed_weighting({"a": ops.convert_to_tensor(2.0), "b": ops.convert_to_tensor(3.0)},
                            {"a": 0.5, "b": 2.0})
    assert float(ops.convert_to_numpy(total)) == pytest.approx(7.0)


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_the_objective_runs_on_the_torch_backend_and_agrees():
    here = pathlib.Path(__file__).resolve().parent
    env = dict(os.environ, KERAS_BACKEND="torch")
    code = (f"import sys, json; sys.path.insert(0, {str(here)!r}); import task_helpers; "
            "print(json.dumps(task_helpers.objective_case()))")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    torch_result = json.loads(run.stdout.strip().splitlines()[-1])
    assert torch_result["backend"] == "torch"
    here_result = objective_case()
    assert np.isfinite(torch_result["objective"])
    assert torch_result["objective"] == pytest.approx(here_result["objective"], rel=1e-5)
    np.testing.assert_allclose(torch_result["grad_norms"], here_result["grad_norms"], rtol=1e-4)
    assert torch_result["grad_unavailable_max"] == 0.0
    for name, value in here_result["metrics"].items():
        assert torch_result["metrics"][name] == pytest.approx(value, rel=1e-5), name
