"""A dataset's fingerprint: what ``sfg_plan``'s rules need to know about the data.

Two passes, cheap first. (1) Every file's header: shape, voxel size, orientation, the
grid (NIfTI through nibabel without reading the voxels; other formats through SimpleITK's
image information; DICOM folders are read whole). (2) The voxels of a bounded sample:
at most ``max_subjects`` subjects spread over the sorted ids, each image read with the
project's reader and subsampled with a stride per axis to at most ``max_voxels`` voxels
for its intensity percentiles; label images are counted whole (a small class must not
fall between the strides).

Numbers only, no decisions: `sfg_app.planning.rules` turns the fingerprint into a plan.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from sfg_app.config.schema import FOREGROUND_RULES, task_type
from sfg_app.data import normalisation
from sfg_app.data.dataset import SectionSource, SubjectFiles, find_subjects
from sfg_app.errors import DataError, SFGWarning
from sfg_app.io import geometry
from sfg_app.io.formats import is_nifti
from sfg_app.io.readers import load_image, sitk_affine
from sfg_app.planning.request import Request

#: Intensity percentiles kept per image section (over all its sampled voxels).
PERCENTILES = (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5)
#: A CT in Hounsfield units: air is -1000; below this is air (or the scanner's padding).
AIR_HU = -500.0


@dataclass(frozen=True)
class Header:
    """One file's grid, from its header: spatial shape, affine, channels."""

    path: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    channels: int = 1

    @property
    def spacing(self) -> np.ndarray:
        return geometry.spacing(self.affine)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        return geometry.axcodes(self.affine)


@dataclass
class Intensities:
    """An image section's sampled intensities: percentiles of every voxel sampled and of
    the foreground (``foreground``: the rule used, Otsu, or above `AIR_HU` for a CT), the
    share of voxels below `AIR_HU`, and whether every value is an integer."""

    percentiles: dict[float, float]
    foreground: str
    foreground_percentiles: dict[float, float]
    below_air: float
    integer_valued: bool
    count: int


@dataclass
class Labels:
    """A label section's voxels per value over the sampled subjects, and a file holding
    each value (for the messages)."""

    counts: dict[int, int]
    example_file: dict[int, str]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def fractions(self) -> dict[int, float]:
        total = max(self.total, 1)
        return {value: count / total for value, count in sorted(self.counts.items())}


@dataclass
class Values:
    """A regression target's sampled values (in a mask when its task has one), or one
    value per subject from a CSV column."""

    percentiles: dict[float, float]
    minimum: float
    maximum: float
    count: int
    integer_valued: bool
    in_mask: str | None = None


@dataclass
class SectionPrint:
    """One input section: its role for the plan, every file's header, and its sample."""

    name: str
    role: str                                  # image, label, values, table
    headers: dict[str, Header] = field(default_factory=dict)
    intensities: Intensities | None = None
    labels: Labels | None = None
    values: Values | None = None


@dataclass
class Fingerprint:
    """The dataset: subjects, sections, the sampled subjects, and what looked wrong."""

    subjects: list[SubjectFiles]
    sections: dict[str, SectionPrint]
    sampled: list[str]
    reference: str
    lacking: dict[str, list[str]] = field(default_factory=dict)
    grid_problems: list[str] = field(default_factory=list)

    def reference_headers(self) -> list[Header]:
        return list(self.sections[self.reference].headers.values())


def section_roles(request: Request) -> dict[str, str]:
    """What the planner reads in each input section the config uses: ``image`` (the
    network's inputs, and regression targets: intensities), ``label`` (segmentation
    targets, masks, foreground masks: values counted), ``table`` (one value per subject)."""
    settings = request.settings
    roles = {name: "image" for name in settings.multitask.image}
    for task in settings.tasks.values():
        target = settings.inputs[task.target]
        if target.value_column is not None:
            roles[task.target] = "table"
        elif getattr(task_type(task.type), "label_target", False):
            roles[task.target] = "label"
        else:
            roles.setdefault(task.target, "values")
        if task.mask:
            roles[task.mask] = "label"
    for name in list(roles):
        foreground = settings.inputs[name].foreground_type
        if foreground not in FOREGROUND_RULES:
            roles[foreground] = "label"
    sampling_map = settings.network.sampling_map
    if sampling_map and request.gave("NETWORK", "window_sampling"):
        roles.setdefault(sampling_map, "label")
    return {name: roles[name] for name in settings.inputs if name in roles}


def discover(request: Request, roles: dict[str, str]) -> tuple[list[SubjectFiles],
                                                              dict[str, list[str]]]:
    """The subjects (the project's discovery), task targets optional so that a subject
    lacking one is reported rather than refused; returns the subjects and, per target
    section, the subjects that lack it."""
    settings = request.settings
    targets = {task.target for task in settings.tasks.values()}
    required = set(settings.multitask.image) | {task.mask for task in settings.tasks.values()
                                                if task.mask}
    subjects = find_subjects([
        SectionSource.of_section(name, settings.inputs[name],
                                 optional=name in targets and name not in required)
        for name in roles])
    images = set(settings.multitask.image)
    subjects = [s for s in subjects if images <= set(s.paths)]
    lacking = {}
    for name in targets:
        missing = [s.subject_id for s in subjects
                   if name not in s.paths and name not in s.values]
        if missing:
            lacking[name] = missing
    return subjects, lacking


def read_header(path: str, loader: str = "auto") -> Header:
    """A file's grid without its voxels where the format allows it (module docstring)."""
    path = os.fspath(path)
    nifti = is_nifti(path) and os.path.isfile(path)
    if loader == "nibabel" or (loader == "auto" and nifti):
        try:
            image = nib.load(path)
            shape = tuple(int(n) for n in image.shape)
            affine = np.asarray(image.affine, dtype=np.float64)
        except Exception:  # noqa: BLE001 - the reader gives the user's error below
            return _header_of(load_image(path, loader))
        spatial = (shape + (1, 1, 1))[:3]
        channels = int(np.prod(shape[3:])) if len(shape) > 3 else 1
        problem = geometry.affine_problem(affine)
        if problem:
            return _header_of(load_image(path, loader))  # the reader's error names it
        return Header(path, spatial, affine, channels)
    if os.path.isdir(path):
        return _header_of(load_image(path, loader))
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return _header_of(load_image(path, loader))  # the reader's error names the file
    dim = reader.GetDimension()
    if dim not in (2, 3):
        return _header_of(load_image(path, loader))
    grid = sitk.Image([1] * dim, sitk.sitkUInt8)
    grid.SetSpacing(reader.GetSpacing())
    grid.SetOrigin(reader.GetOrigin())
    grid.SetDirection(reader.GetDirection())
    size = tuple(int(n) for n in reader.GetSize())
    return Header(path, (size + (1, 1))[:3], sitk_affine(grid),
                  int(reader.GetNumberOfComponents()))


def _header_of(image) -> Header:
    return Header(image.path, image.spatial_shape, image.affine, image.num_channels)


class Progress:
    """``sfg_plan: <what> i/n`` on stderr: rewritten in place on a terminal, else a line
    at each quarter."""

    def __init__(self, what: str, total: int, stream=None):
        self.what, self.total = what, max(total, 1)
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown = -1

    def step(self, done: int) -> None:
        quarter = 4 * done // self.total
        if self.tty:
            end = "\n" if done >= self.total else ""
            self.stream.write(f"\rsfg_plan: {self.what} {done}/{self.total}{end}")
            self.stream.flush()
        elif quarter > self.shown:
            self.shown = quarter
            self.stream.write(f"sfg_plan: {self.what} {done}/{self.total}\n")


def sampled_subjects(subjects: list[SubjectFiles], max_subjects: int) -> list[SubjectFiles]:
    """At most ``max_subjects``, spread evenly over the sorted subjects."""
    if len(subjects) <= max_subjects:
        return list(subjects)
    picks = np.unique(np.linspace(0, len(subjects) - 1, max_subjects).round().astype(int))
    return [subjects[i] for i in picks]


def strided(data: np.ndarray, max_voxels: int) -> np.ndarray:
    """Every ``s``-th voxel along each spatial axis, ``s`` the smallest stride that keeps
    at most ``max_voxels`` voxels (a stride per axis does not alias as one over the
    flattened array would)."""
    spatial = int(np.prod(data.shape[:3]))
    stride = max(1, math.ceil((spatial / max_voxels) ** (1 / 3)))
    return data[::stride, ::stride, ::stride]


def _percentiles(values: np.ndarray) -> dict[float, float]:
    if values.size == 0:
        return {q: math.nan for q in PERCENTILES}
    found = np.percentile(values, PERCENTILES)
    return {q: float(v) for q, v in zip(PERCENTILES, found)}


def intensities(samples: list[np.ndarray]) -> Intensities:
    """The statistics of one image section from its subjects' sampled voxels."""
    values = np.concatenate([s.ravel() for s in samples]).astype(np.float64)
    values = values[np.isfinite(values)]
    below_air = float(np.mean(values < AIR_HU)) if values.size else 0.0
    integer_valued = bool(values.size and np.all(values == np.round(values)))
    looks_ct = ct_like(_percentiles(values), below_air, integer_valued)
    if looks_ct:
        rule, foreground = f"above {AIR_HU:g} HU", values[values > AIR_HU]
    else:
        rule = "otsu"
        foreground = np.concatenate([
            s.ravel()[s.ravel() > normalisation.otsu_threshold(s.ravel())]
            for s in samples if s.size and np.isfinite(s).all()] or [np.zeros(0)])
    return Intensities(_percentiles(values), rule, _percentiles(foreground), below_air,
                       integer_valued, int(values.size))


def ct_like(percentiles: dict[float, float], below_air: float, integer_valued: bool) -> bool:
    """A CT in Hounsfield units: its lowest percentile is air or the scanner's padding
    (-3100 to -800 HU), at least 5 % of its voxels are below -500 HU (air around the
    body), its bulk stays under 4000 HU, and its values are integers (as scanners store
    them, scaled or not)."""
    low, high = percentiles[1], percentiles[99]
    return (integer_valued and -3100 <= low <= -800 and below_air >= 0.05
            and high <= 4000)


def label_counts(arrays: list[tuple[str, np.ndarray]]) -> Labels:
    """Voxels per label value over whole label images; a DataError for non-integer
    values, naming the file."""
    counts: dict[int, int] = {}
    example: dict[int, str] = {}
    for path, data in arrays:
        if data.dtype.kind == "f":
            finite = data[np.isfinite(data)]
            if finite.size != data.size or not np.array_equal(finite, np.round(finite)):
                odd = np.unique(data[~np.isfinite(data) | (data != np.round(data))])[:5]
                raise DataError(
                    f"The label image {path!r} holds non-integer values such as "
                    f"{', '.join(f'{v:g}' for v in odd)}; a segmentation target or a mask "
                    "holds class labels 0, 1, 2, ... If it is a probability or another "
                    "continuous map, make its task a regression task.")
        flat = data.ravel()
        if flat.size and flat.min() >= 0 and flat.max() < 2 ** 16:
            found = np.bincount(flat.astype(np.int64))
            values = np.flatnonzero(found)
            numbers = found[values]
        else:
            values, numbers = np.unique(flat, return_counts=True)
        for value, number in zip(values, numbers):
            value = int(value)
            counts[value] = counts.get(value, 0) + int(number)
            example.setdefault(value, path)
    return Labels(counts, example)


def target_values(samples: list[np.ndarray], in_mask: str | None) -> Values:
    values = np.concatenate([s.ravel() for s in samples]).astype(np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        values = np.zeros(1)
    return Values(_percentiles(values), float(values.min()), float(values.max()),
                  int(values.size), bool(np.all(values == np.round(values))), in_mask)


def take_fingerprint(request: Request, max_subjects: int = 20,
                     max_voxels: int = 250_000, progress=True) -> Fingerprint:
    """Headers of every file, then the voxels of a bounded sample (module docstring)."""
    settings = request.settings
    roles = section_roles(request)
    subjects, lacking = discover(request, roles)
    reference = settings.multitask.image[0]
    sections = {name: SectionPrint(name, role) for name, role in roles.items()}
    files = [(s.subject_id, name, path) for s in subjects for name, path in s.paths.items()]
    shown = Progress("reading headers", len(files)) if progress else None
    for done, (subject_id, name, path) in enumerate(files, start=1):
        sections[name].headers[subject_id] = read_header(path, settings.inputs[name].loader)
        if shown:
            shown.step(done)
    fingerprint = Fingerprint(subjects, sections, [], reference, lacking)
    fingerprint.grid_problems = _grid_problems(fingerprint)
    sample = sampled_subjects(subjects, max_subjects)
    fingerprint.sampled = [s.subject_id for s in sample]
    _sample_voxels(request, fingerprint, sample, max_voxels, progress)
    return fingerprint


def _grid_problems(fingerprint: Fingerprint) -> list[str]:
    """Per subject, each volume section whose grid is not the image section's."""
    problems = []
    reference = fingerprint.sections[fingerprint.reference]
    for subject_id, grid in reference.headers.items():
        for name, section in fingerprint.sections.items():
            other = section.headers.get(subject_id)
            if name == reference.name or other is None:
                continue
            difference = geometry.space_difference(grid.shape, grid.affine, other.shape,
                                                   other.affine)
            if difference:
                problems.append(f"{subject_id}: [{name}] {other.path} is not on the grid "
                                f"of [{reference.name}] {grid.path}: {difference}")
    return problems


def _sample_voxels(request: Request, fingerprint: Fingerprint, sample: list[SubjectFiles],
                   max_voxels: int, progress: bool) -> None:
    settings = request.settings
    masks = {task.target: task.mask for task in settings.tasks.values()}
    image_samples: dict[str, list[np.ndarray]] = {}
    label_arrays: dict[str, list[tuple[str, np.ndarray]]] = {}
    value_samples: dict[str, list[np.ndarray]] = {}
    reads = [(s, name) for s in sample for name in s.paths]
    shown = Progress("reading voxels of the sample", len(reads)) if progress else None
    loaded: dict[tuple[str, str], np.ndarray] = {}
    for done, (subject, name) in enumerate(reads, start=1):
        role = fingerprint.sections[name].role
        data = load_image(subject.paths[name], settings.inputs[name].loader).data
        if role == "label":
            label_arrays.setdefault(name, []).append((subject.paths[name], data))
            loaded[(subject.subject_id, name)] = data
        elif role == "image":
            image_samples.setdefault(name, []).append(strided(data, max_voxels))
        elif role == "values":
            loaded[(subject.subject_id, name)] = data
        if shown:
            shown.step(done)
    for name, section in fingerprint.sections.items():
        if section.role == "image" and name in image_samples:
            section.intensities = intensities(image_samples[name])
        elif section.role == "label" and name in label_arrays:
            section.labels = label_counts(label_arrays[name])
        elif section.role == "values":
            mask = masks.get(name)
            for subject in sample:
                data = loaded.get((subject.subject_id, name))
                if data is None:
                    continue
                inside = loaded.get((subject.subject_id, mask)) if mask else None
                if inside is not None and inside.shape[:3] == data.shape[:3] \
                        and np.any(inside > 0):
                    chosen = data[np.broadcast_to(inside[..., :1] > 0, data.shape)]
                    chosen = chosen[::max(1, math.ceil(chosen.size / max_voxels))]
                else:
                    chosen = strided(data, max_voxels)
                value_samples.setdefault(name, []).append(chosen)
            if name in value_samples:
                section.values = target_values(value_samples[name], mask)
        elif section.role == "table":
            numbers = [s.values[name] for s in fingerprint.subjects if name in s.values]
            section.values = target_values([np.asarray(numbers, dtype=np.float64)], None)
    if not fingerprint.sections[fingerprint.reference].intensities:
        warnings.warn(f"No voxel of [{fingerprint.reference}] was sampled.", SFGWarning,
                      stacklevel=2)
