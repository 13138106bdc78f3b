"""The written outputs read back and scored against the targets, per subject and task.

The files are named by `sfg_app.application.outputs`; each task says how a table row is
read back (its `outputs.prediction_from_row`) and which metrics score an output (its
`scoring`, `sfg_app.tasks.scoring`); this module finds the files, puts each target (and
mask) on the output's grid and collects the rows.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from sfg_app.application.outputs import OUTPUT_EXTENSIONS, output_name, table_name
from sfg_app.data.resampling import resample
from sfg_app.errors import DataError
from sfg_app.io.geometry import same_space
from sfg_app.io.image import Image
from sfg_app.io.readers import load_image


def scored_rows(tasks: dict, subjects, output_dir: str) -> list[dict]:
    """`{"subject", "task", metric: value, ...}` per subject and task whose target the
    subject has (an optional target may be missing), from the outputs in `output_dir`."""
    rows = []
    for subject in subjects:
        for name, task in tasks.items():
            if task.target not in subject.paths and task.target not in subject.values:
                continue
            if task.head_kind == "image":
                row = _table_row(os.path.join(output_dir, table_name(name)), name,
                                 subject.subject_id)
                metrics = task.scoring.score(task.outputs.prediction_from_row(row),
                                             np.atleast_1d(subject.values[task.target]))
            else:
                path = _output_file(output_dir, name, subject.subject_id)
                prediction = load_image(path)
                truth = _on_grid(load_image(subject.paths[task.target]), prediction,
                                 order=0 if task.label_target else 1)
                mask = None
                if task.mask:
                    mask = _on_grid(load_image(subject.paths[task.mask]), prediction,
                                    order=0).data
                metrics = task.scoring.score(prediction.data, truth.data, mask=mask,
                                             spacing=tuple(prediction.spacing))
            rows.append({"subject": subject.subject_id, "task": name, **metrics})
    return rows


def _output_file(folder: str, task: str, subject_id: str) -> str:
    for extension in OUTPUT_EXTENSIONS:
        path = os.path.join(folder, output_name(subject_id, task, extension))
        if os.path.exists(path):
            return path
    raise _no_output(task, subject_id, folder)


def _table_row(path: str, task: str, subject_id: str) -> dict:
    if os.path.exists(path):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if row["subject_id"] == subject_id:
                    return row
    raise _no_output(task, subject_id, path)


def _no_output(task: str, subject_id: str, where: str) -> DataError:
    return DataError(f"No output of task {task!r} for subject {subject_id!r} in {where}. "
                     "Run sfg_infer with the same config first.")


def _on_grid(image: Image, reference: Image, order: int) -> Image:
    """`image` on `reference`'s voxel grid (resampled only when the grids differ)."""
    if same_space(image.spatial_shape, image.affine, reference.spatial_shape, reference.affine):
        return image
    mapping = np.linalg.inv(image.affine) @ reference.affine
    data = resample(image.data, mapping[:3, :3], mapping[:3, 3], reference.spatial_shape, order)
    return Image(data=data, affine=reference.affine, path=image.path, header=None,
                 metadata=image.metadata)
