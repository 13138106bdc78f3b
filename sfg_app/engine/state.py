"""The plan and the live state of a training run, shared by the driver and its handlers."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from sfg_app.engine.checkpoints import CheckpointStore


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The settings the loop itself needs, in one place (built by `from_settings`)."""

    model_dir: str
    max_iter: int
    starting_iter: int = -1
    batch_size: int = 2
    save_every_n: int = 500
    max_checkpoints: int = 5
    validation_every_n: int = 0
    validation_max_iter: int = 1
    tensorboard_every_n: int = 20
    seed: int = 0
    strategy: str = "default"
    mixed_precision: str = "none"

    @classmethod
    def from_settings(cls, settings) -> "TrainingOptions":
        training, system = settings.training, settings.system
        return cls(
            model_dir=system.model_dir, max_iter=training.max_iter,
            starting_iter=training.starting_iter, batch_size=settings.network.batch_size,
            save_every_n=training.save_every_n, max_checkpoints=training.max_checkpoints,
            validation_every_n=training.validation_every_n,
            validation_max_iter=training.validation_max_iter,
            tensorboard_every_n=training.tensorboard_every_n, seed=system.seed,
            strategy=system.strategy, mixed_precision=system.mixed_precision)


@dataclasses.dataclass
class TrainingState:
    """What handlers may read: the live objects of the run and the last step's logs."""

    plan: TrainingOptions
    strategy: tf.distribute.Strategy
    model: keras.Model
    objective: keras.layers.Layer
    optimiser: keras.optimizers.Optimizer
    checkpoints: CheckpointStore
    chief: bool
    first_iteration: int = 0
    iteration: int = 0
    logs: dict = dataclasses.field(default_factory=dict)
    last_saved: int | None = None

    @property
    def global_batch_size(self) -> int:
        """`[NETWORK] batch_size` is per replica, as NiftyNet's was per GPU."""
        return self.plan.batch_size * self.strategy.num_replicas_in_sync


def to_numpy(value) -> np.ndarray:
    """The value of a tensor or a (possibly distributed) variable, or a number, as numpy."""
    if isinstance(value, (keras.Variable, tf.Tensor, tf.Variable)):
        return np.asarray(value.numpy())
    return np.asarray(value)
