"""The files inference writes, named once, and refused before any work when they exist.

Per task and subject, in `[INFERENCE] save_seg_dir` (or `--output`), each task type
choosing its kinds of file and what they hold (its `outputs`, `sfg_app.tasks.outputs`):
- voxel tasks: `<subject>_<task>` (segmentation: labels; regression: values in the
  target's units); segmentation with `save_probabilities` also `<subject>_<task>_prob`
  (one channel per class); in `sample` mode also `<subject>_<task>_var`, the variance
  across the sampled architectures (segmentation: summed over the classes);
- image-level tasks: one row per subject in `<task>.csv`.
`output_name` and `table_name` are the one definition of these names (inference,
`sfg_app.application.inference`, writes them; scoring, `sfg_app.application.scoring`,
reads them back); `check_outputs` lists every subject's before any work, so that a
command can refuse existing files (no silent overwrite) before hours of inference.
Every path is built by `io.paths.output_path`: inside the output folder, never an input
image.
"""

from __future__ import annotations

import os

from sfg_app.errors import OutputError
from sfg_app.io.formats import split_extension
from sfg_app.io.paths import output_path, real_paths

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
                         for kind in task.outputs.kinds(with_variance))
    return names


def input_files(subjects) -> frozenset[str]:
    """The real paths of every file the run reads: no output may replace one."""
    return real_paths(path for subject in subjects for path in subject.paths.values())


def check_outputs(subjects, tasks: dict, image_section: str, output_dir: str,
                  with_variance: bool, overwrite: bool) -> list[str]:
    """The output paths of every subject for `tasks`, each inside `output_dir` and off
    the inputs (the extension is that of the subject's `image_section` file); an
    OutputError naming the outputs that exist already, unless `overwrite`."""
    protected = input_files(subjects)
    names = {}
    for subject in subjects:
        extension = output_extension(subject.paths[image_section])
        for name in planned_outputs(tasks, subject.subject_id, extension, with_variance):
            names[name] = output_path(output_dir, name, overwrite=True, protected=protected)
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
