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

import numpy as np
import tensorflow as tf

from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.engine.strategies import dtype_policy
from sfg_app.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class InferencePlan:
    model_dir: str
    inference_iter: int = -1
    architecture: str = "map"
    mc_samples: int = 10
    batch_size: int = 2
    mixed_precision: str = "none"
    seed: int = 0
    #: An exported compact network (`<task>.keras` of sfg_export) to run instead of the
    #: config's network restored from `model_dir` (`inference_iter` is then not used).
    network: str | None = None

    @classmethod
    def from_settings(cls, settings, network=None) -> "InferencePlan":
        return cls(model_dir=settings.system.model_dir,
                   inference_iter=settings.inference.inference_iter,
                   architecture=settings.inference.architecture,
                   mc_samples=settings.inference.mc_samples,
                   batch_size=settings.network.batch_size,
                   mixed_precision=settings.system.mixed_precision,
                   seed=settings.system.seed,
                   network=None if network is None else os.fspath(network))


class InferenceDriver:
    def __init__(self, application, plan: InferencePlan):
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
            check_exported_network(model, self.plan.network, self.application,
                                   self.plan.architecture)
            self.iteration = None
            return model
        with dtype_policy(self.plan.mixed_precision):
            model = self.application.build_network()
        store = CheckpointStore(self.plan.model_dir, model=model)
        self.iteration = store.restore(self.plan.inference_iter, partial=True)
        if hasattr(model, "set_architecture"):
            model.set_architecture(self.plan.architecture)
        return model

    def run(self, subjects, model=None) -> list[str]:
        """Infer every subject of `subjects` (from the application); return written paths.

        `model`: the network `load_model` gave, when the caller has loaded it already (to
        check it before any work); loaded here otherwise."""
        import keras

        keras.utils.set_random_seed(self.plan.seed)
        model = self.load_model() if model is None else model
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


def load_exported_network(path):
    """The compact network in `path`, as `sfg_export` wrote it (`<task>.keras`); a
    DataError naming the file when it is missing, not a `.keras` archive, does not load,
    or holds another kind of network."""
    import keras

    import sfg_app.networks.compact as compact  # registers CompactNetwork for loading

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


def check_exported_network(model, path, application, architecture: str) -> None:
    """A ConfigError naming the file when the exported network in `path` cannot stand in
    for the config's: it is the `map` architecture of one task, so its head must be a
    task of the config with that task's head (kind and channels), its convolutions of
    the windows' rank, and `[INFERENCE] architecture` map (`sample` and `expected` need
    the grouping probabilities, which the export dropped). The input channels are
    checked against the images, once they are known (`sfg_app.engine.commands`)."""
    (task, spec), = model.head_specs.items()
    tasks = application.tasks
    if architecture != "map":
        raise ConfigError(
            f"[INFERENCE] architecture = {architecture}, but --network {path} is the "
            f"exported map architecture of task {task!r}: it has no grouping "
            "probabilities to draw or weight architectures with. Set [INFERENCE] "
            "architecture = map (or pass --set INFERENCE.architecture=map), or infer with "
            "the full network (without --network).")
    if task not in tasks:
        raise ConfigError(
            f"--network {path} is the network of task {task!r}, which is not a task of "
            f"this config ([MULTITASK] tasks = {', '.join(tasks)}). Give the config the "
            "network was trained with, or the export of one of its tasks.")
    expected = (tasks[task].head_kind, tasks[task].head_channels)
    if (spec.kind, spec.channels) != expected:
        raise ConfigError(
            f"--network {path} has a {spec.kind} head of {spec.channels} channel(s) for "
            f"task {task!r}, but [TASK {task}] of this config needs a {expected[0]} head "
            f"of {expected[1]} channel(s). Give the config the network was trained with.")
    if model.spatial_rank != application.spatial_dims:
        raise ConfigError(
            f"--network {path} is a {model.spatial_rank}D network, but the windows of "
            f"[{application.data.roles.images[0]}] spatial_window_size = "
            f"{application.data.window_size} are {application.spatial_dims}D. Give the "
            "config the network was trained with.")


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
