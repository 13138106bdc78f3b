"""One subject's grid inference: its windows, the blending per task, the files written.

The engine runs the network over `batches()` and hands every batch's decoded outputs to
`add()`; `write()` blends them into volumes on the preprocessed grid, takes each back to
the input's own grid (padding, resampling and reorientation undone) and writes it with
the input's affine and header, through a temporary file and a rename.

Per task and subject, in `[INFERENCE] save_seg_dir` (or `--output`), each task type
choosing its kinds of file and what they hold (`sfg_app.tasks.base`):
- voxel tasks: `<subject>_<task>` (segmentation: labels; regression: values in the
  target's units); segmentation with `save_probabilities` also `<subject>_<task>_prob`
  (one channel per class); in `sample` mode also `<subject>_<task>_var`, the variance
  across the sampled architectures (segmentation: summed over the classes);
- image-level tasks: one row per subject in `<task>.csv`.
`output_name` and `table_name` are the one definition of these names (the evaluation,
`sfg_app.application.evaluation`, reads them back with them); `planned_outputs` lists a
subject's before any work, so that a command can refuse existing files (no silent
overwrite) before hours of inference. Every path is built by `io.paths.output_path`:
inside the output folder, never an input image.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from sfg_app.data.aggregators import ImageAggregator, VoxelAggregator
from sfg_app.data.preprocessing import PreprocessedSubject, undo
from sfg_app.io.atomic import atomic_write_text
from sfg_app.io.formats import split_extension
from sfg_app.io.paths import output_path
from sfg_app.io.writers import write_image

OUTPUT_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".nrrd")


def output_extension(source_path: str) -> str:
    """The input's own format when it can be written in one file, else NIfTI."""
    extension = split_extension(source_path)[1]
    return extension if extension in OUTPUT_EXTENSIONS else ".nii.gz"


def output_name(subject_id: str, task_name: str, extension: str, kind: str = "") -> str:
    """The file of one subject's output of a voxel task; ``kind``: "" (labels or values),
    "prob" (class probabilities) or "var" (variance across sampled architectures)."""
    return f"{subject_id}_{task_name}{'_' + kind if kind else ''}{extension}"


def table_name(task_name: str) -> str:
    """The file of an image-level task's outputs: one row per subject."""
    return f"{task_name}.csv"


def planned_outputs(tasks: dict, subject_id: str, extension: str,
                    with_variance: bool) -> list[str]:
    """The file names inference writes for one subject (see the module docstring)."""
    names = []
    for name, task in tasks.items():
        if task.head_kind == "image":
            names.append(table_name(name))
        else:
            names.extend(output_name(subject_id, name, extension, kind)
                         for kind in task.output_kinds(with_variance))
    return names


class SubjectInference:
    def __init__(self, subject: PreprocessedSubject, *, plan, tasks: dict, image_sections,
                 output_dir: str, blending: str, with_variance: bool, spatial_dims: int,
                 protected_paths=()):
        self.subject = subject
        self.subject_id = subject.subject_id
        self.plan = plan
        self.tasks = tasks
        self.image_sections = tuple(image_sections)
        self.output_dir = output_dir
        self.spatial_dims = spatial_dims
        self.protected = frozenset(protected_paths)  # real paths (io.paths.real_paths)
        self.extension = output_extension(subject.record.source.path)
        self.aggregators: dict[str, dict[str, object]] = {}
        for name, task in tasks.items():
            self.aggregators[name] = self._aggregators(task, blending, with_variance)

    def _aggregators(self, task, blending: str, with_variance: bool) -> dict:
        channels = task.head_channels
        if task.head_kind == "image":
            chosen = {"mean": ImageAggregator(self.plan, channels=channels)}
            if with_variance:
                chosen["variance"] = ImageAggregator(self.plan, channels=channels)
            return chosen
        output = task.blended_output(resampled=self.subject.record.resampled,
                                     with_variance=with_variance)
        chosen = {"mean": VoxelAggregator(self.plan, channels=channels, output=output,
                                          blending=blending)}
        if with_variance:
            chosen["variance"] = VoxelAggregator(self.plan, channels=channels,
                                                 output="values", blending=blending)
        return chosen

    # -- the engine's side ----------------------------------------------------------------
    def batches(self, batch_size: int):
        """`(network input (B, *window, C), locations)` over the subject's windows."""
        arrays = {name: self.subject.arrays[name] for name in self.image_sections}
        for windows, locations in self.plan.batches(arrays, batch_size):
            image = np.concatenate([windows[name] for name in self.image_sections], axis=-1)
            if self.spatial_dims == 2:
                image = image[:, :, :, 0, :]
            yield image.astype(np.float32, copy=False), locations

    def add(self, mean: dict, variance: dict | None, locations) -> None:
        for name, aggregators in self.aggregators.items():
            aggregators["mean"].add(self._windows(mean[name]), locations)
            if "variance" in aggregators:
                aggregators["variance"].add(self._windows(variance[name]), locations)

    def _windows(self, batch):
        batch = np.asarray(batch, np.float32)
        if self.spatial_dims == 2 and batch.ndim == 4:
            batch = batch[:, :, :, None, :]
        return batch

    # -- results ------------------------------------------------------------------------------
    def write(self) -> list[str]:
        written = []
        for name, aggregators in self.aggregators.items():
            task = self.tasks[name]
            if task.head_kind == "image":
                written.append(self._write_row(task, aggregators))
                continue
            mean, to_input_grid = aggregators["mean"], self._undo(task)
            volumes = task.output_volumes(mean.result(), mean.output, to_input_grid)
            if "variance" in aggregators:
                variance = task.variance_volume(aggregators["variance"].result())
                volumes["var"] = (to_input_grid(variance, 1), np.float32)
            written.extend(self._write_volume(name, kind, volume, dtype)
                           for kind, (volume, dtype) in volumes.items())
        return written

    def _undo(self, task):
        """`undo(volume, order)` back to the input's grid; order None: the task's own."""
        def to_input_grid(volume: np.ndarray, order: int | None) -> np.ndarray:
            return undo(volume, self.subject.record,
                        task.output_interp_order if order is None else order)
        return to_input_grid

    def _path(self, name: str) -> str:
        # Existing files were refused (or allowed) before the run by `planned_outputs`;
        # here the path is only held inside the folder and off the inputs.
        return output_path(self.output_dir, name, overwrite=True, protected=self.protected)

    def _write_volume(self, task_name: str, kind: str, data: np.ndarray, dtype) -> str:
        path = self._path(output_name(self.subject_id, task_name, self.extension, kind))
        source = self.subject.record.source
        return write_image(path, data, source.affine, like=source, dtype=dtype)

    def _write_row(self, task, aggregators) -> str:
        """One row per subject in `<task>.csv`, rewritten whole (temporary file + rename)."""
        path = self._path(table_name(task.name))
        rows = {}
        if os.path.exists(path):
            with open(path, newline="") as handle:
                rows = {row[0]: row for row in csv.reader(handle)}
        columns, values = task.table_columns(aggregators["mean"].result())
        header = ["subject_id"] + columns
        if "variance" in aggregators:
            variance = aggregators["variance"].result()
            header += [f"{task.name}_{i}_var" for i in range(len(variance))]
            values.extend(variance)
        rows.pop("subject_id", None)
        rows[self.subject_id] = [self.subject_id] + [f"{v:.6g}" for v in values]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(header)
        for key in sorted(rows):
            writer.writerow(rows[key])
        atomic_write_text(path, text.getvalue())
        return path
