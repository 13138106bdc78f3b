"""The inference driver: runs a trained network over the windows an application plans.

The application plans each subject's windows and blends and writes the outputs; this
driver restores the checkpoint, fixes the architecture (`map`, `sample`, `expected`)
and runs the network in batches. In `sample` mode each batch goes through the network
`mc_samples` times, each time with a new architecture drawn from the learned grouping
distribution, and the per-voxel mean and variance of the decoded outputs are handed on.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import tensorflow as tf

from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.engine.strategies import dtype_policy


@dataclasses.dataclass(frozen=True)
class InferencePlan:
    model_dir: str
    inference_iter: int = -1
    architecture: str = "map"
    mc_samples: int = 10
    batch_size: int = 2
    mixed_precision: str = "none"
    seed: int = 0

    @classmethod
    def from_settings(cls, settings) -> "InferencePlan":
        return cls(model_dir=settings.system.model_dir,
                   inference_iter=settings.inference.inference_iter,
                   architecture=settings.inference.architecture,
                   mc_samples=settings.inference.mc_samples,
                   batch_size=settings.network.batch_size,
                   mixed_precision=settings.system.mixed_precision,
                   seed=settings.system.seed)


class InferenceDriver:
    def __init__(self, application, plan: InferencePlan):
        self.application = application
        self.plan = plan

    def load_model(self):
        """The network of the chosen checkpoint, in the plan's architecture mode."""
        with dtype_policy(self.plan.mixed_precision):
            model = self.application.build_network()
        store = CheckpointStore(self.plan.model_dir, model=model)
        self.iteration = store.restore(self.plan.inference_iter, partial=True)
        if hasattr(model, "set_architecture"):
            model.set_architecture(self.plan.architecture)
        return model

    def run(self, subjects) -> list[str]:
        """Infer every subject of `subjects` (from the application); return written paths."""
        import keras

        keras.utils.set_random_seed(self.plan.seed)
        model = self.load_model()
        app = self.application

        @tf.function(jit_compile=False)
        def predict(image):
            return app.decode_outputs(model(image, training=False))

        samples = self.plan.mc_samples if self.plan.architecture == "sample" else 1
        written = []
        for subject in subjects:
            for image, locations in subject.batches(self.plan.batch_size):
                mean, variance = _moments(predict, image, samples)
                subject.add(mean, variance, locations)
            files = subject.write()
            written.extend(files)
            print(f"{subject.subject_id}: {', '.join(os.path.basename(f) for f in files)}",
                  file=sys.stderr, flush=True)
        return written


def _moments(predict, image, samples: int):
    """Mean and (for several samples) variance of the decoded outputs, per tensor.

    Welford's update keeps one running mean and one sum of squares per output, so K
    samples cost no more memory than two.
    """
    if samples == 1:
        return tf.nest.map_structure(np.asarray, predict(image)), None
    mean, squares = None, None
    for k in range(1, samples + 1):
        outputs = tf.nest.map_structure(lambda t: np.asarray(t, np.float64), predict(image))
        if mean is None:
            mean = outputs
            squares = tf.nest.map_structure(np.zeros_like, outputs)
            continue
        delta = tf.nest.map_structure(lambda x, m: x - m, outputs, mean)
        mean = tf.nest.map_structure(lambda m, d: m + d / k, mean, delta)
        squares = tf.nest.map_structure(lambda s, d, x, m: s + d * (x - m),
                                        squares, delta, outputs, mean)
    variance = tf.nest.map_structure(lambda s: s / samples, squares)
    return mean, variance
