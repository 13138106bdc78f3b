"""The inference driver: runs a trained network over the windows an application plans.

The application plans each subject's windows and blends and writes the outputs; this
driver gets the network, either the config's network restored from a checkpoint with
its architecture fixed (`map`, `sample`, `expected`), or the compact network of one task
that `sfg_export` wrote (`plan.network`), and runs it in batches. In `sample` mode each
batch goes through the network `mc_samples` times, each time with a new architecture
drawn from the learned grouping distribution, and the per-voxel mean and variance of the
decoded outputs are handed on.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zipfile

import keras
import numpy as np
import tensorflow as tf

from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.engine.strategies import dtype_policy
from sfg_app.errors import DataError
from sfg_app.networks import compact  # registers CompactNetwork for loading


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    model_dir: str
    inference_iter: int = -1
    architecture: str = "map"
    mc_samples: int = 10
    mixed_precision: str = "none"
    seed: int = 0
    #: An exported compact network (`<task>.keras` of sfg_export) to run instead of the
    #: config's network restored from `model_dir` (`inference_iter` is then not used).
    network: str | None = None

    @classmethod
    def from_settings(cls, settings, network=None) -> "InferenceOptions":
        return cls(model_dir=settings.system.model_dir,
                   inference_iter=settings.inference.inference_iter,
                   architecture=settings.inference.architecture,
                   mc_samples=settings.inference.mc_samples,
                   mixed_precision=settings.system.mixed_precision,
                   seed=settings.system.seed,
                   network=None if network is None else os.fspath(network))


class InferenceDriver:
    def __init__(self, application, plan: InferenceOptions):
        self.application = application
        self.plan = plan

    def load_model(self):
        """The network to run: the exported network of `plan.network`, checked against
        the config (see `check_exported_network`), or the network of the chosen
        checkpoint in the plan's architecture mode. `iteration` is the checkpoint's
        iteration, None for an exported network (its file does not say)."""
        if self.plan.network is not None:
            with dtype_policy(self.plan.mixed_precision):
                model = load_exported_network(self.plan.network)
            self.application.check_exported_network(model, self.plan.network,
                                                    self.plan.architecture)
            self.iteration = None
            return model
        with dtype_policy(self.plan.mixed_precision):
            model = self.application.build_network()
        store = CheckpointStore(self.plan.model_dir, model=model)
        self.iteration = store.restore(self.plan.inference_iter, partial=True)
        self.application.set_architecture(model, self.plan.architecture)
        return model

    def run(self, subjects, model=None) -> list[str]:
        """Infer every subject of `subjects` (from the application); return written paths.

        `model`: the network `load_model` gave, when the caller has loaded it already (to
        check it before any work); loaded here otherwise."""
        keras.utils.set_random_seed(self.plan.seed)
        model = self.load_model() if model is None else model
        app = self.application

        # Windows differ in size between subjects (and the last batch of a subject holds
        # fewer): `reduce_retracing` relaxes the traced shapes to None after the first
        # change, so one trace serves every later batch.
        @tf.function(jit_compile=False, reduce_retracing=True)
        def predict(image):
            return app.decode_outputs(model(image, training=False))

        samples = self.plan.mc_samples if self.plan.architecture == "sample" else 1
        written = []
        for subject in subjects:
            for image, locations in subject.batches():
                mean, variance = _moments(predict, image, samples)
                subject.add(mean, variance, locations)
            files = subject.write()
            written.extend(files)
            print(f"{subject.subject_id}: {', '.join(os.path.basename(f) for f in files)}",
                  file=sys.stderr, flush=True)
        return written


def load_exported_network(path):
    """The compact network in `path`, as `sfg_export` wrote it (`<task>.keras`); a
    DataError naming the file when it is missing, not a `.keras` archive, does not load,
    or holds another kind of network."""
    path = os.fspath(path)
    fix = ("Give the <task>.keras file that sfg_export writes (default folder "
           "<model_dir>/export).")
    if not os.path.exists(path):
        raise DataError(f"--network {path} does not exist. {fix}")
    if os.path.isdir(path):
        raise DataError(
            f"--network {path} is a folder: sfg_infer runs the Keras file of an exported "
            f"network, not its TensorFlow SavedModel (for serving). {fix}")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise DataError(f"--network {path} is not a Keras archive (a .keras zip file). {fix}")
    try:
        model = keras.saving.load_model(path)
    except (ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"--network {path} does not load as a Keras network: "
                        f"{' '.join(str(error).split())[:300]}. {fix}") from None
    if not isinstance(model, compact.CompactNetwork) or len(model.head_specs) != 1:
        heads = ", ".join(getattr(model, "head_specs", ())) or "no task heads"
        raise DataError(f"--network {path} holds a {type(model).__name__} ({heads}); "
                        f"expected the compact network of one task. {fix}")
    return model


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
