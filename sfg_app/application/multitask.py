"""The multi-task application: one network, one head and loss per `[TASK]` section.

It says what a run computes: the network named by `[NETWORK] name` with a head per
task (an SFG network also grows one specialist group per task), the objective of
`../shared/design/SFG.md` (weighted task losses + kl_weight * KL of the groupings +
decay * ||W||^2), the windows of the data engine, and the outputs written per task.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys

import keras
from keras import ops

from sfg_app.application.base import Application
from sfg_app.application.data import DataPlan
from sfg_app.application.evaluation import evaluation_rows
from sfg_app.application.inference import (SubjectInference, output_extension,
                                           planned_outputs)
from sfg_app.application.optimisers import learning_rate
from sfg_app.application.tasks import build_tasks, head_specs
from sfg_app.data.dataset import SubjectFiles, subject_id_from_name
from sfg_app.data.samplers.grid import GridSampler
from sfg_app.errors import ConfigError, DataError, OutputError
from sfg_app.io.paths import check_name, output_path, real_paths
from sfg_app.io.readers import load_image
from sfg_app.layers.grouping import GroupingConfig
from sfg_app.registry import NETWORKS, OPTIMISERS
from sfg_app.tasks.weighting import UncertaintyWeighting, fixed_weighting


def iterations(length, max_iter: int) -> int:
    """A schedule's length in iterations: ``length`` itself, or a fraction (a float in
    (0, 1)) of ``max_iter``, rounded."""
    return int(round(length * max_iter)) if isinstance(length, float) else int(length)


@keras.saving.register_keras_serializable(package="sfg_app")
class FixedWeighting(keras.layers.Layer):
    """`sum_t w_t L_t` with the fixed `[TASK] weight`s: the objective of `weighting = fixed`.

    A layer with no weights, so that both weightings are called alike by the objective.
    float32 whatever the dtype policy: a layer casts its inputs to its compute dtype, and
    float16 losses would round (bfloat16) or overflow (a loss above 65504 in float16).
    """

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


class MultiTaskApplication(Application):
    def __init__(self, settings):
        super().__init__(settings)
        self.tasks = build_tasks(settings)
        self.data = DataPlan(settings, self.tasks)
        self.spatial_dims = 2 if self.data.window_size[2] == 1 else 3
        self._open: list = []

    # -- the network and the objective ------------------------------------------------
    @functools.cached_property
    def input_channels(self) -> int:
        """Channels of the network input: the image sections' channels, from the data."""
        subjects = self.data.subjects
        return sum(load_image(subjects[0].paths[name],
                              self.settings.inputs[name].loader).num_channels
                   for name in self.data.roles.images)

    @property
    def input_shape(self) -> tuple[int, ...]:
        window = self.data.window_size[:self.spatial_dims]
        return tuple(window) + (self.input_channels,)

    def network_identity(self) -> dict:
        """What defines the network and the meaning of its outputs, as ``{"SECTION.key":
        value}`` in config terms: a checkpoint restored into a network that differs in any
        of them gives wrong outputs, or fails after a flood of warnings. Preprocessing,
        the learning rate, schedules and inference options may change."""
        settings, network = self.settings, self.settings.network
        identity = {"NETWORK.name": network.name, "NETWORK.layer_scale": network.layer_scale,
                    "NETWORK.activation_function": network.activation_function,
                    "NETWORK.norm_layer": network.norm_layer,
                    "MULTITASK.image": list(self.data.roles.images),
                    "input channels": self._known_input_channels(),
                    "spatial dimensions (spatial_window_size)": self.spatial_dims,
                    "MULTITASK.tasks": list(self.tasks),
                    "MULTITASK.weighting": settings.multitask.weighting}
        for name, task in self.tasks.items():
            values = settings.tasks[name]
            identity[f"TASK {name}.type"] = values.type
            identity[f"TASK {name} head"] = f"{task.head_kind} x {task.head_channels}"
            for key in ("target_shift", "target_scale"):
                if hasattr(values, key):
                    identity[f"TASK {name}.{key}"] = getattr(values, key)
        if self._is_sfg(NETWORKS.get(network.name)):
            identity.update({"SFG.connectivity": settings.sfg.connectivity,
                             "SFG.norm_parameters": settings.sfg.norm_parameters})
        return identity

    def _known_input_channels(self) -> int | None:
        """The input channels, or None when the config's data cannot be read (inference
        on --input files checks the channels of those against the checkpoint itself)."""
        try:
            return self.input_channels
        except DataError:
            return None

    @staticmethod
    def _is_sfg(network_class) -> bool:
        return "grouping" in inspect.signature(network_class).parameters

    def build_network(self):
        settings, network = self.settings, self.settings.network
        network_class = NETWORKS.get(network.name)
        options = dict(heads=head_specs(self.tasks), layer_scale=network.layer_scale,
                       activation=network.activation_function, norm_layer=network.norm_layer)
        if self._is_sfg(network_class):
            sfg, max_iter = settings.sfg, settings.training.max_iter
            finetune = min(iterations(sfg.finetune_iter, max_iter), max_iter)
            values = {field.name: getattr(sfg, field.name)
                      for field in dataclasses.fields(GroupingConfig)
                      if field.name != "fixed_from"}
            values["warmup_iter"] = iterations(sfg.warmup_iter, max_iter)
            options["grouping"] = GroupingConfig(
                fixed_from=max_iter - finetune if finetune else None, **values)
            options["seed"] = settings.system.seed
        model = network_class(**options)
        # The weights from the shapes: a forward pass at the window size would cost as
        # much as one window of inference (12 s at 96^3 on 2 cores) for nothing.
        model.build((None,) + self.input_shape)
        return model

    def build_objective(self):
        if self.settings.multitask.weighting == "uncertainty":
            objective = UncertaintyWeighting(list(self.tasks))
        else:
            objective = FixedWeighting({name: task.weight for name, task in self.tasks.items()})
        objective.build(None)
        return objective

    def build_optimiser(self):
        training = self.settings.training
        rate = learning_rate(training.lr, training.lr_schedule, training.max_iter,
                             training.lr_decay_rate, training.lr_decay_steps,
                             training.warmup_iter)
        return OPTIMISERS.get(training.optimiser)(rate, training.gradient_clip_norm)

    def group_names(self) -> list[str]:
        return list(self.tasks) + ["shared"]

    # -- the computation -------------------------------------------------------------------
    def _spatial(self, tensor):
        """A window batch `(B, X, Y, Z, C)` as the network sees it (Z dropped in 2D)."""
        if self.spatial_dims == 2 and len(tensor.shape) == 5:
            return tensor[:, :, :, 0, :]
        return tensor

    def network_inputs(self, batch):
        images = [ops.cast(batch[name], "float32") for name in self.data.roles.images]
        image = images[0] if len(images) == 1 else ops.concatenate(images, axis=-1)
        return self._spatial(image)

    def balanced_variables(self, model) -> list:
        return model.balanced_logits()

    def compute_loss(self, model, objective, outputs, batch):
        total, logs, _ = self.loss_parts(model, objective, outputs, batch)
        return total, logs

    def loss_parts(self, model, objective, outputs, batch):
        losses, logs = {}, {}
        for name, task in self.tasks.items():
            target = self._spatial(batch[task.target])
            mask = self._spatial(batch[task.mask]) if task.mask else None
            available = batch["available"][task.target]
            losses[name] = task.loss(target, outputs[name], mask, available)
            logs[f"{name}_loss"] = losses[name]
            for metric, value in task.metrics(target, outputs[name], mask, available).items():
                logs[f"{name}_{metric}"] = value
        total = objective(losses)
        regulariser = ops.zeros((), "float32")
        kl_weight = self.settings.sfg.kl_weight
        if kl_weight and hasattr(model, "grouping_kl"):
            kl = model.grouping_kl()
            logs["kl"] = kl
            total = total + kl_weight * kl
            regulariser = regulariser + kl_weight * kl
        decay = self.settings.network.decay
        if decay:
            kernels = [v for v in model.trainable_weights if v.path.endswith("kernel")]
            weight_decay = decay * ops.sum(
                ops.stack([ops.sum(ops.square(ops.cast(k, "float32"))) for k in kernels]))
            total = total + weight_decay
            regulariser = regulariser + weight_decay
        return total, logs, (objective.terms(losses), regulariser)

    def summary_images(self, batch, outputs) -> dict:
        """The middle slice (along z) of the first window: the image channels, and per
        voxel task its target and its prediction (labels for class tasks), each scaled
        to [0, 1]."""
        images = {}
        image = self.network_inputs(batch)
        for channel in range(image.shape[-1]):
            images[f"image_{channel}"] = _slice(image[..., channel:channel + 1])
        for name, task in self.tasks.items():
            if task.head_kind != "voxel":
                continue
            target = self._spatial(batch[task.target])
            decoded = task.decode(outputs[name])
            prediction = decoded.get("labels", decoded.get("values"))
            images[f"{name}/target"] = _slice(ops.cast(target[..., :1], "float32"))
            images[f"{name}/prediction"] = _slice(ops.cast(prediction[..., :1], "float32"))
        return images

    def decode_outputs(self, outputs):
        """What inference blends (each task type's `inferred_output`: probabilities of
        class tasks, values of the others), for each task in `outputs` (every task, or
        the one of an exported network)."""
        return {name: self.tasks[name].decode(output)[self.tasks[name].inferred_output]
                for name, output in outputs.items()}

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

    # -- inference ------------------------------------------------------------------------
    def inference_files(self, inputs=None) -> list[SubjectFiles]:
        """The subjects of `[INFERENCE] dataset_to_infer`, or groups of `inputs` files
        (one file per image section, in the order of `[MULTITASK] image`)."""
        subjects = (self.data.phase(self.settings.inference.dataset_to_infer)
                    if inputs is None else self._files_as_subjects(inputs))
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

    def check_outputs(self, subjects: list[SubjectFiles], output_dir: str,
                      overwrite: bool, tasks=None) -> list[str]:
        """Before any work: the output paths of every subject for `tasks` (default:
        every task), each inside `output_dir` and off the inputs; an OutputError naming
        the outputs that exist already, unless `overwrite`."""
        with_variance = self.settings.inference.architecture == "sample"
        protected = _input_files(subjects)
        names = {}
        for subject in subjects:
            extension = output_extension(subject.paths[self.data.roles.images[0]])
            for name in planned_outputs(self._inferred_tasks(tasks), subject.subject_id,
                                        extension, with_variance):
                names[name] = output_path(output_dir, name, overwrite=True,
                                          protected=protected)
        existing = [path for path in names.values() if os.path.lexists(path)]
        if existing and not overwrite:
            shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more"
                                               if len(existing) > 5 else "")
            raise OutputError(
                f"{len(existing)} output(s) exist already: {shown}. Nothing was written. "
                "Remove them, choose another output folder (--output or [INFERENCE] "
                "save_seg_dir), or pass --overwrite (or set [INFERENCE] overwrite = true) "
                "to replace them.")
        return list(names.values())

    def inference_subjects(self, subjects: list[SubjectFiles], output_dir=None, tasks=None):
        """A `SubjectInference` per subject, preprocessed when the engine reaches it,
        blending and writing the outputs of `tasks` (default: every task)."""
        tasks = self._inferred_tasks(tasks)
        images = self.data.roles.images
        inference = self.settings.inference
        output_dir = str(output_dir or inference.save_seg_dir)
        sampler = self.data.sampler() if self.settings.network.window_sampling == "resize" \
            else GridSampler(self.data.window_size, inference.border)
        protected = _input_files(subjects)
        for subject in subjects:
            processed = self.data.preprocess(subject, sections=images)
            channels = sum(processed.arrays[name].shape[-1] for name in images)
            if channels != self.input_channels:
                raise DataError(
                    f"Subject {subject.subject_id} ({', '.join(subject.paths[n] for n in images)})"
                    f" has {channels} channel(s); the network takes {self.input_channels}, as "
                    "the first subject's images have. Every subject needs the same channels.")
            plan = (sampler.inference_plan(processed.arrays)
                    if hasattr(sampler, "inference_plan") else sampler.plan(processed.arrays))
            yield SubjectInference(
                processed, plan=plan, tasks=tasks, image_sections=images,
                output_dir=output_dir, blending=inference.blending,
                with_variance=inference.architecture == "sample",
                spatial_dims=self.spatial_dims, protected_paths=protected)

    def check_exported_network(self, model, path, architecture: str) -> None:
        """A ConfigError naming the file when the exported network in `path` cannot stand in
        for the config's: it is the `map` architecture of one task, so its head must be a
        task of the config with that task's head (kind and channels), its convolutions of
        the windows' rank, and `[INFERENCE] architecture` map (`sample` and `expected` need
        the grouping probabilities, which the export dropped). The input channels are
        checked against the images, once they are known (`sfg_app.commands`)."""
        (task, spec), = model.head_specs.items()
        tasks = self.tasks
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
        if model.spatial_rank != self.spatial_dims:
            raise ConfigError(
                f"--network {path} is a {model.spatial_rank}D network, but the windows of "
                f"[{self.data.roles.images[0]}] spatial_window_size = "
                f"{self.data.window_size} are {self.spatial_dims}D. Give the "
                "config the network was trained with.")

    def evaluate_outputs(self, output_dir: str) -> list[dict]:
        """Metrics of the outputs in `output_dir` of the `dataset_to_infer` subjects."""
        return evaluation_rows(self.tasks, self.data.phase(
            self.settings.inference.dataset_to_infer), output_dir)

    def _files_as_subjects(self, inputs) -> list[SubjectFiles]:
        images = self.data.roles.images
        files = [os.fspath(path) for path in inputs]
        if len(files) % len(images):
            raise DataError(
                f"--input takes one file per image section ({', '.join(images)}) for each "
                f"subject, in that order: {len(images)} file(s) a subject. Received "
                f"{len(files)} file(s).")
        source = next(s for s in self.data.sources() if s.name == images[0])
        subjects, first_file = [], {}
        for first in range(0, len(files), len(images)):
            group = files[first:first + len(images)]
            subject_id = subject_id_from_name(os.path.basename(group[0]), source,
                                              suffixes_only=True)
            check_name(subject_id, f"--input: the subject id of {group[0]!r}", DataError)
            if subject_id in first_file:
                raise DataError(
                    f"--input: {first_file[subject_id]!r} and {group[0]!r} both give the subject "
                    f"id {subject_id!r}, and their outputs would have the same names. Infer "
                    "them in separate runs with different --output folders, or rename one.")
            first_file[subject_id] = group[0]
            subjects.append(SubjectFiles(subject_id=subject_id, paths=dict(zip(images, group)),
                                         values={}))
        # The network's input channels come from these files, not from the dataset's.
        self.__dict__["input_channels"] = sum(
            load_image(path, self.settings.inputs[name].loader).num_channels
            for name, path in subjects[0].paths.items())
        return subjects


def _input_files(subjects) -> frozenset[str]:
    """The real paths of every file the run reads: no output may replace one."""
    return real_paths(path for subject in subjects for path in subject.paths.values())


def _slice(volume):
    """`(B, X, Y[, Z], 1)` -> the first example's middle z slice as `(1, Y, X, 1)` in
    [0, 1], the last y row on top (anterior up when the grid is RAS), for TensorBoard."""
    picture = volume[:1]
    if len(picture.shape) == 5:
        picture = picture[:, :, :, picture.shape[3] // 2, :]
    picture = ops.flip(ops.transpose(picture, (0, 2, 1, 3)), axis=1)
    low, high = ops.min(picture), ops.max(picture)
    return (picture - low) / ops.maximum(high - low, 1e-6)
