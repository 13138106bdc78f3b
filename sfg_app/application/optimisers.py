"""Optimisers and learning-rate schedules named by `[TRAINING] optimiser` and `lr_schedule`.

Each registered optimiser is a function of the learning rate (a float or a schedule) and
of the global gradient-norm clip, so the training driver builds every one the same way.
Under a multi-replica strategy Keras clips each replica's gradients before they are
summed across replicas; with one replica the clip is exactly the global norm.
"""

from __future__ import annotations

import keras
from keras import ops


def _clip(gradient_clip_norm: float) -> float | None:
    return gradient_clip_norm if gradient_clip_norm and gradient_clip_norm > 0 else None


def adam(learning_rate, gradient_clip_norm: float = 0.0):
    return keras.optimizers.Adam(learning_rate, global_clipnorm=_clip(gradient_clip_norm))


def adamw(learning_rate, gradient_clip_norm: float = 0.0):
    return keras.optimizers.AdamW(learning_rate, global_clipnorm=_clip(gradient_clip_norm))


def sgd(learning_rate, gradient_clip_norm: float = 0.0):
    return keras.optimizers.SGD(learning_rate, global_clipnorm=_clip(gradient_clip_norm))


def momentum(learning_rate, gradient_clip_norm: float = 0.0):
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True,
                                global_clipnorm=_clip(gradient_clip_norm))


def rmsprop(learning_rate, gradient_clip_norm: float = 0.0):
    return keras.optimizers.RMSprop(learning_rate, global_clipnorm=_clip(gradient_clip_norm))


@keras.saving.register_keras_serializable(package="sfg_app")
class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lr` at every step.

    A float learning rate is an optimiser variable and a schedule is not, so a checkpoint
    of one could not be restored into the other (the optimiser's variables are saved by
    position). As a schedule it is never saved: a resumed run takes `lr` and
    `lr_schedule` from its config, whatever the checkpoint was trained with.
    """

    def __init__(self, lr: float):
        self.lr = float(lr)

    def __call__(self, step):
        return ops.convert_to_tensor(self.lr, "float32")

    def get_config(self):
        return {"lr": self.lr}


@keras.saving.register_keras_serializable(package="sfg_app")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to the schedule's value over `warmup_iter` steps.

    Large learning rates on a freshly initialised network with batch norm diverge more
    often in the first few hundred steps than later; warm-up is the usual cure.
    """

    def __init__(self, schedule, warmup_iter: int):
        if int(warmup_iter) < 1:
            raise ValueError("Invalid value for argument `warmup_iter`. Expected an "
                             f"integer >= 1. Received warmup_iter={warmup_iter}")
        self.schedule = schedule
        self.warmup_iter = int(warmup_iter)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        base = self.schedule(step) if callable(self.schedule) else self.schedule
        ramp = ops.minimum(1.0, (step + 1.0) / float(self.warmup_iter))
        return ops.cast(base, "float32") * ramp

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "warmup_iter": self.warmup_iter}

    @classmethod
    def from_config(cls, config):
        schedule = config["schedule"]
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        return cls(schedule, config["warmup_iter"])


def learning_rate(lr: float, schedule: str, max_iter: int, decay_rate: float,
                  decay_steps: int, warmup_iter: int):
    """The learning rate of `[TRAINING]`: a schedule of the step counter.

    `cosine` decays to zero at `max_iter`; `exponential` multiplies by `decay_rate` every
    `decay_steps` smoothly, `step` in stairs.
    """
    if schedule == "constant":
        rate = ConstantSchedule(lr)
    elif schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, max_iter))
    elif schedule in ("exponential", "step"):
        rate = keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=decay_steps, decay_rate=decay_rate,
            staircase=schedule == "step")
    else:
        raise ValueError("Invalid value for argument `schedule`. Expected one of "
                         "constant, cosine, exponential, step. "
                         f"Received schedule={schedule!r}")
    if warmup_iter > 0:
        rate = WarmupSchedule(rate, warmup_iter)
    return rate
