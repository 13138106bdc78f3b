"""The network's inputs: image files grouped into subjects, and their channels.

`sfg_infer --input` gives files, one per image section a subject, in the order of
`[MULTITASK] image`; they become subjects like those the config's data discovers. The
network's input channels are the channels of a subject's image files, read from their
headers.
"""

from __future__ import annotations

import os

from sfg_app.data.dataset import SubjectFiles, subject_id_from_name
from sfg_app.errors import DataError
from sfg_app.io.paths import check_name
from sfg_app.io.readers import load_image


def image_channels(subject: SubjectFiles, images, loaders: dict) -> int:
    """The channels of `subject`'s files of the `images` sections, side by side
    (`loaders`: the `[section] loader` of each)."""
    return sum(load_image(subject.paths[name], loaders[name]).num_channels for name in images)


def files_as_subjects(files, images, source) -> list[SubjectFiles]:
    """`files` in groups of one per `images` section, each group a subject named after
    its first file as the first section's `source` (a `SectionSource`) names files."""
    files = [os.fspath(path) for path in files]
    if len(files) % len(images):
        raise DataError(
            f"--input takes one file per image section ({', '.join(images)}) for each "
            f"subject, in that order: {len(images)} file(s) a subject. Received "
            f"{len(files)} file(s).")
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
    return subjects
