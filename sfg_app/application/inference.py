"""One subject's grid inference: its windows, the blending per task, the files written.

The application plans the windows (their size and how many go through the network per
call: `inference_windows`); the engine runs the network over `batches()` and hands every batch's decoded outputs to
`add()`; `write()` blends them into volumes on the preprocessed grid, takes each back to
the input's own grid (padding, resampling and reorientation undone) and writes it with
the input's affine and header, through a temporary file and a rename. What each task
blends and writes is its `outputs` (`sfg_app.tasks.outputs`); the files' names are
`sfg_app.application.outputs`'.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from sfg_app.application.outputs import output_extension, output_name, table_name
from sfg_app.data.aggregators import ImageAggregator, VoxelAggregator
from sfg_app.data.preprocessing import PreprocessedSubject, undo
from sfg_app.io.atomic import atomic_write_text
from sfg_app.io.paths import output_path
from sfg_app.io.writers import write_image


class SubjectInference:
    def __init__(self, subject: PreprocessedSubject, *, plan, tasks: dict, image_sections,
                 output_dir: str, blending: str, with_variance: bool, spatial_dims: int,
                 windows_per_call: int = 1, protected_paths=()):
        self.subject = subject
        self.subject_id = subject.subject_id
        self.plan = plan
        self.tasks = tasks
        self.image_sections = tuple(image_sections)
        self.output_dir = output_dir
        self.spatial_dims = spatial_dims
        self.windows_per_call = int(windows_per_call)
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
        output = task.outputs.blended_output(resampled=self.subject.record.resampled,
                                             with_variance=with_variance)
        chosen = {"mean": VoxelAggregator(self.plan, channels=channels, output=output,
                                          blending=blending)}
        if with_variance:
            chosen["variance"] = VoxelAggregator(self.plan, channels=channels,
                                                 output="values", blending=blending)
        return chosen

    # -- the engine's side ----------------------------------------------------------------
    def batches(self):
        """`(network input (B, *window, C), locations)` over the subject's windows,
        `windows_per_call` at a time (the last batch may hold fewer)."""
        arrays = {name: self.subject.arrays[name] for name in self.image_sections}
        for windows, locations in self.plan.batches(arrays, self.windows_per_call):
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
            mean = aggregators["mean"]
            volumes = task.outputs.volumes(mean.result(), mean.output, self._to_input_grid)
            if "variance" in aggregators:
                variance = task.outputs.variance_volume(aggregators["variance"].result())
                volumes["var"] = (self._to_input_grid(variance, 1), np.float32)
            written.extend(self._write_volume(name, kind, volume, dtype)
                           for kind, (volume, dtype) in volumes.items())
        return written

    def _to_input_grid(self, volume: np.ndarray, order: int) -> np.ndarray:
        """`volume` back on the input's grid, resampled with spline `order`."""
        return undo(volume, self.subject.record, order)

    def _path(self, name: str) -> str:
        # Existing files were refused (or allowed) before the run by `check_outputs`;
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
        columns, values = task.outputs.table_columns(aggregators["mean"].result())
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
