"""How the task losses add up to one objective: fixed weights, or learned uncertainty.

The application builds ``sum_t w_t L_t`` with a ``FixedWeighting`` layer (``[MULTITASK]
weighting = fixed``, the weights from each task's ``weight``), or an
``UncertaintyWeighting`` layer (``weighting = uncertainty``) whose weights are trained,
saved and restored with the network's. Both are called alike: ``layer(losses)`` is the
total, ``layer.terms(losses)`` each task's part of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
from keras import ops


def _ordered_losses(losses: Mapping, task_names: Sequence[str]):
    missing = [name for name in task_names if name not in losses]
    if missing:
        raise ValueError(f"Missing the loss of task(s) {missing}. Expected one loss per "
                         f"task of {list(task_names)}. Received losses for {list(losses)}.")
    return ops.stack([ops.cast(losses[name], "float32") for name in task_names])


def fixed_weighting(losses: Mapping, weights: Mapping[str, float]):
    """``sum_t weights[t] * losses[t]`` over the tasks named in ``weights``."""
    names = list(weights)
    coefficients = ops.convert_to_tensor([float(weights[n]) for n in names], dtype="float32")
    return ops.sum(coefficients * _ordered_losses(losses, names))


@keras.saving.register_keras_serializable(package="sfg_app")
class FixedWeighting(keras.layers.Layer):
    """``sum_t w_t L_t`` with the fixed `[TASK] weight`s: a layer with no weights, so that
    both weightings are called alike. float32 whatever the dtype policy: a layer casts
    its inputs to its compute dtype, and float16 losses would round (bfloat16) or
    overflow (a loss above 65504 in float16)."""

    def __init__(self, weights: dict, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.task_weights = {name: float(w) for name, w in weights.items()}

    def call(self, losses):
        return fixed_weighting(losses, self.task_weights)

    def terms(self, losses) -> dict:
        """``{task: w_t L_t}``: the total's part that each task owns."""
        return {name: weight * ops.cast(losses[name], "float32")
                for name, weight in self.task_weights.items()}

    def get_config(self):
        return dict(super().get_config(), weights=self.task_weights)


@keras.saving.register_keras_serializable(package="sfg_app")
class UncertaintyWeighting(keras.layers.Layer):
    """Homoscedastic-uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018).

    ``total = sum_t exp(-s_t) L_t + s_t`` with one learned ``s_t = log sigma_t^2`` per
    task. The gradient with respect to ``s_t`` is ``1 - exp(-s_t) L_t``: each ``s_t``
    settles where ``exp(s_t) = L_t``, so a task whose loss stays large is down-weighted,
    and the ``+ s_t`` term stops every weight from collapsing to 0. Computed in float32
    whatever the global dtype policy (``dtype`` defaults to float32).

    Call it on ``{task_name: scalar loss}``; it returns the scalar total.
    """

    def __init__(self, task_names: Sequence[str], initial_log_variance: float = 0.0,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if (isinstance(task_names, str) or not isinstance(task_names, Sequence)
                or not task_names or not all(isinstance(n, str) for n in task_names)
                or len(set(task_names)) != len(task_names)):
            raise ValueError("Invalid value for argument `task_names`. Expected a non-empty "
                             f"list of distinct task names. Received task_names={task_names!r}.")
        self.task_names = tuple(task_names)
        self.initial_log_variance = float(initial_log_variance)

    def build(self, input_shape=None):
        self.log_variances = self.add_weight(
            name="log_variances", shape=(len(self.task_names),),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True, dtype="float32")
        self.built = True

    def call(self, losses):
        s = ops.cast(self.log_variances, "float32")
        return ops.sum(ops.exp(-s) * _ordered_losses(losses, self.task_names) + s)

    def terms(self, losses) -> dict:
        """``{task: exp(-s_t) L_t + s_t}``: the total's part that each task owns."""
        s = ops.cast(self.log_variances, "float32")
        weighted = ops.exp(-s) * _ordered_losses(losses, self.task_names) + s
        return {name: weighted[i] for i, name in enumerate(self.task_names)}

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(task_names=list(self.task_names),
                      initial_log_variance=self.initial_log_variance)
        return config
