"""A small real application for driver tests: y = 2x + 1 learnt by a 1x1 convolution."""

import keras
import tensorflow as tf

from sfg_app.application.base import Application
from sfg_app.engine.state import TrainingOptions


class RegressionApplication(Application):
    """Learns y = 2x + 1 voxel-wise with a 1x1 convolution: small, real, checkable."""

    def __init__(self, lr=0.05, dropout=0.0):
        super().__init__(settings=None)
        self.lr = lr
        self.dropout = dropout
        self.closed = False

    def build_network(self):
        inputs = keras.Input((4, 4, 4, 1))
        x = inputs
        if self.dropout:
            # A random stream in the network (as the SFG layers' architecture samples).
            x = keras.layers.Dropout(self.dropout, seed=5, name="dropout")(x)
        outputs = {"y": keras.layers.Conv3D(1, 1, name="head")(x)}
        return keras.Model(inputs, outputs)

    def build_objective(self):
        return keras.layers.Identity()

    def build_optimiser(self):
        return keras.optimizers.SGD(self.lr)

    def training_dataset(self, batch_size, first_window, shard_index=0, shard_count=1):
        def window(index):
            x = tf.random.stateless_uniform((4, 4, 4, 1), seed=tf.stack([index, 7]))
            return {"x": x, "y": 2.0 * x + 1.0}

        start = first_window + shard_index
        return (tf.data.Dataset.range(start, start + 10**9, shard_count).map(window)
                .batch(batch_size, drop_remainder=True))

    def has_validation_data(self):
        return True

    def validation_dataset(self, batch_size, shard_index=0, shard_count=1):
        return self.training_dataset(batch_size, 10**6, shard_index, shard_count).take(2)

    def network_inputs(self, batch):
        return batch["x"]

    def compute_loss(self, model, objective, outputs, batch):
        loss = tf.reduce_mean(tf.square(outputs["y"] - batch["y"]))
        return loss, {"mse": loss}

    def close(self):
        self.closed = True


def plan(tmp_path, **overrides):
    values = dict(model_dir=str(tmp_path / "run") if tmp_path else None, max_iter=30, batch_size=2,
                  save_every_n=10, max_checkpoints=5, tensorboard_every_n=5, seed=3)
    values.update(overrides)
    return TrainingOptions(**values)
