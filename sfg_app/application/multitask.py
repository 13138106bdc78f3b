"""The multi-task application: one network, one head and loss per `[TASK]` section.

It says what a run computes, filling the hooks of `sfg_app.application.base` from
collaborators that each do one thing: the network named by `[NETWORK] name` with a head
per task (`network.NetworkBuilder`; an SFG network also grows one specialist group per
task), the objective of `../shared/design/SFG.md` (`objective`), the batches as the
network sees them (`batches`), the windows of the data engine (`data.RunData`), the
subjects and files of inference (`inputs`, `outputs`, `inference`), the check of an
exported network (`exported`) and the scoring of written outputs (`scoring`).
"""

from __future__ import annotations

import functools
import sys

from sfg_app.application.base import Application
from sfg_app.application.batches import BatchLayout
from sfg_app.application.data import RunData
from sfg_app.application.exported import check_exported_network
from sfg_app.application.inference import SubjectInference
from sfg_app.application.inference_windows import (DEFAULT_MEMORY_SHARE, InferenceWindows,
                                                   inference_bytes_per_voxel)
from sfg_app.application.inputs import files_as_subjects, image_channels
from sfg_app.application.network import NetworkBuilder
from sfg_app.application.objective import Objective, weighting_layer
from sfg_app.application.optimisers import learning_rate
from sfg_app.application.outputs import check_outputs, input_files
from sfg_app.application.scoring import scored_rows
from sfg_app.application.tasks import build_tasks
from sfg_app.data.samplers.base import spatial_shape
from sfg_app.data.samplers.grid import GridSampler
from sfg_app.errors import DataError
from sfg_app.io.readers import available_memory
from sfg_app.networks.stages import HIGHRES_STAGES
from sfg_app.registry import OPTIMISERS


class MultiTaskApplication(Application):
    def __init__(self, settings, inputs=None):
        super().__init__(settings, inputs)
        self.tasks = build_tasks(settings)
        self.data = RunData(settings, self.tasks)
        self.spatial_dims = 2 if self.data.window_size[2] == 1 else 3
        self.layout = BatchLayout(self.data.roles.images, self.spatial_dims)
        self.network = NetworkBuilder(settings, self.tasks, self.data.window_size,
                                      self.spatial_dims)
        self.loss = Objective(self.tasks, self.layout, settings.sfg.kl_weight,
                              settings.network.decay)
        self._open: list = []

    # -- the network's inputs ---------------------------------------------------------------
    @functools.cached_property
    def _input_subjects(self) -> list:
        """The `inputs` files as subjects (see `inputs.files_as_subjects`)."""
        images = self.data.roles.images
        source = next(s for s in self.data.sources() if s.name == images[0])
        return files_as_subjects(self.inputs, images, source)

    @functools.cached_property
    def input_channels(self) -> int:
        """Channels of the network input: those of the first subject's images, of the
        `inputs` files when given, else of the config's data."""
        first = self._input_subjects[0] if self.inputs is not None else self.data.subjects[0]
        loaders = {name: self.settings.inputs[name].loader for name in self.data.roles.images}
        return image_channels(first, self.data.roles.images, loaders)

    def _known_input_channels(self) -> int | None:
        """The input channels, or None when the data cannot be read (inference on
        --input files checks the channels of those against the checkpoint itself)."""
        try:
            return self.input_channels
        except DataError:
            return None

    # -- the network, the objective and the optimiser ---------------------------------------
    def network_identity(self) -> dict:
        return self.network.identity(self.data.roles.images, self._known_input_channels())

    def build_network(self):
        return self.network.build(self.input_channels)

    def build_objective(self):
        return weighting_layer(self.settings.multitask.weighting, self.tasks)

    def build_optimiser(self):
        training = self.settings.training
        rate = learning_rate(training.lr, training.lr_schedule, training.max_iter,
                             training.lr_decay_rate, training.lr_decay_steps,
                             training.warmup_iter)
        return OPTIMISERS.get(training.optimiser)(rate, training.gradient_clip_norm)

    def group_names(self) -> list[str]:
        return list(self.tasks) + ["shared"]

    # -- the computation -------------------------------------------------------------------
    def network_inputs(self, batch):
        return self.layout.network_inputs(batch)

    def balanced_variables(self, model) -> list:
        return model.balanced_logits()

    def compute_loss(self, model, objective, outputs, batch):
        total, logs, _ = self.loss.parts(model, objective, outputs, batch)
        return total, logs

    def loss_parts(self, model, objective, outputs, batch):
        return self.loss.parts(model, objective, outputs, batch)

    def summary_images(self, batch, outputs) -> dict:
        return self.layout.summary_images(self.tasks, batch, outputs)

    def decode_outputs(self, outputs):
        """What inference blends (each task's `outputs.inferred_output`: probabilities
        of class tasks, values of the others), for each task in `outputs` (every task,
        or the one of an exported network)."""
        return {name: self.tasks[name].decode(output)[self.tasks[name].outputs.inferred_output]
                for name, output in outputs.items()}

    # -- the network's state: every network of `sfg_app.networks` declares these -------------
    def set_architecture(self, model, mode: str) -> None:
        model.set_architecture(mode)

    def grouping_probabilities(self, model) -> dict:
        return model.grouping_probabilities()

    def probe_iterations(self, model) -> int:
        return model.probe_iterations

    def summary_scalars(self, model) -> dict:
        """The Gumbel-softmax temperature `tau` of an SFG network."""
        return {"tau": float(model.temperature())} if model.is_sfg else {}

    # -- data ---------------------------------------------------------------------------------
    def training_dataset(self, batch_size, first_window, shard_index=0, shard_count=1):
        from sfg_app.data.tf_adapter import TrainingWindows, resolve_worker_kind

        system = self.settings.system
        # Before any preprocessing: worker_kind = process with cache = none is an error.
        kind, notice = resolve_worker_kind(system.worker_kind, system.num_threads,
                                           self.settings.network.cache)
        print(notice, file=sys.stderr)
        self.data.fit_intensity_references()
        source = self.data.window_source("training", system.seed, augment=True)
        windows = TrainingWindows(
            source, batch_size=batch_size, num_threads=system.num_threads, worker_kind=kind,
            queue_length=self.settings.network.queue_length,
            start=first_window + shard_index, step=shard_count)
        self._open.append(windows)
        return windows.dataset

    def has_validation_data(self) -> bool:
        return bool(self.data.phase("validation"))

    def validation_dataset(self, batch_size, shard_index=0, shard_count=1):
        from sfg_app.data.tf_adapter import validation_windows

        training = self.settings.training
        source = self.data.window_source(
            "validation", self.settings.system.seed + 1 + shard_index, augment=False)
        return validation_windows(source, num_windows=training.validation_max_iter * batch_size,
                                  batch_size=batch_size)

    def close(self) -> None:
        while self._open:
            self._open.pop().close()

    # -- inference and evaluation -------------------------------------------------------------
    def inference_files(self) -> list:
        """The subjects of `[INFERENCE] dataset_to_infer`, or groups of the `inputs` files
        (one file per image section, in the order of `[MULTITASK] image`)."""
        subjects = (self.data.phase(self.settings.inference.dataset_to_infer)
                    if self.inputs is None else self._input_subjects)
        if not subjects:
            raise DataError(
                f"No subject to infer: the {self.settings.inference.dataset_to_infer!r} split "
                f"of {self.settings.system.dataset_split_file} is empty. Set [TRAINING] "
                "exclude_fraction_for_inference, [INFERENCE] dataset_to_infer, or give "
                "files with --input.")
        return subjects

    def _inferred_tasks(self, tasks=None) -> dict:
        """The tasks named in `tasks` (those an exported network has heads for), or
        every task of the config when None."""
        return dict(self.tasks) if tasks is None else {name: self.tasks[name] for name in tasks}

    def check_outputs(self, subjects, output_dir: str, overwrite: bool, tasks=None) -> list[str]:
        return check_outputs(subjects, self._inferred_tasks(tasks), self.data.roles.images[0],
                             output_dir, self.settings.inference.architecture == "sample",
                             overwrite)

    def inference_windows(self) -> InferenceWindows:
        """The rule that sizes each subject's inference windows and the windows per
        network call (`inference_windows`): `[INFERENCE] spatial_window_size` and
        `memory_limit` (default: a quarter of the memory available now), the estimate of
        the network's bytes per window voxel."""
        inference, network = self.settings.inference, self.settings.network
        limit = (inference.memory_limit * 2 ** 20 if inference.memory_limit is not None
                 else int(available_memory() * DEFAULT_MEMORY_SHARE))
        stages = getattr(self.network.network_class, "plan", ()) or HIGHRES_STAGES
        outputs = sum(task.head_channels for task in self.tasks.values()
                      if task.head_kind == "voxel")
        per_voxel = inference_bytes_per_voxel(
            stages, network.layer_scale, self.spatial_dims,
            input_channels=self.input_channels, output_channels=max(outputs, 1))
        window = inference.spatial_window_size
        return InferenceWindows(self.data.window_size, inference.border, max(int(limit), 1),
                                per_voxel, None if window is None else tuple(window),
                                network.batch_size, largest=network.norm_layer != "instance")

    def inference_subjects(self, subjects, output_dir=None, tasks=None):
        """A `SubjectInference` per subject, preprocessed when the engine reaches it,
        blending and writing the outputs of `tasks` (default: every task), over windows
        sized by `inference_windows` (with `window_sampling = resize`: the volume resized
        to the training window)."""
        tasks = self._inferred_tasks(tasks)
        images = self.data.roles.images
        inference = self.settings.inference
        output_dir = str(output_dir or inference.save_seg_dir)
        resize = self.settings.network.window_sampling == "resize"
        windows = None if resize else self.inference_windows()
        protected = input_files(subjects)
        for subject in subjects:
            processed = self.data.preprocess(subject, sections=images)
            channels = sum(processed.arrays[name].shape[-1] for name in images)
            if channels != self.input_channels:
                raise DataError(
                    f"Subject {subject.subject_id} ({', '.join(subject.paths[n] for n in images)})"
                    f" has {channels} channel(s); the network takes {self.input_channels}, as "
                    "the first subject's images have. Every subject needs the same channels.")
            if resize:
                plan, per_call = self.data.sampler().inference_plan(processed.arrays), 1
            else:
                choice = windows.choose(spatial_shape(processed.arrays))
                plan = GridSampler(choice.window, inference.border).plan(processed.arrays)
                per_call = choice.windows_per_call
                print(f"{subject.subject_id}: {len(plan.locations)} window(s) of "
                      f"{' x '.join(map(str, choice.window))}, {per_call} per network call "
                      f"({choice.reason})", file=sys.stderr, flush=True)
            yield SubjectInference(
                processed, plan=plan, tasks=tasks, image_sections=images,
                output_dir=output_dir, blending=inference.blending,
                with_variance=inference.architecture == "sample",
                spatial_dims=self.spatial_dims, windows_per_call=per_call,
                protected_paths=protected)

    def check_exported_network(self, model, path, architecture: str) -> None:
        check_exported_network(model, path, architecture, self.tasks, self.spatial_dims,
                               self.data.roles.images[0], self.data.window_size)

    def evaluate_outputs(self, output_dir: str) -> list[dict]:
        """Metrics of the outputs in `output_dir` of the `dataset_to_infer` subjects."""
        return scored_rows(self.tasks, self.data.phase(
            self.settings.inference.dataset_to_infer), output_dir)
