"""Per subject, every section onto one grid, with a record to take outputs back.

The grid is the reference section's (the image section, the first ``kind="image"``
section unless named): reorient to ``axcodes`` (flips and axis swaps only), resample to
``pixdim`` (per-section ``interp_order``, labels nearest), intensity steps on image
sections, then pad. Sections not on the reference grid are an error, or, with
``match_space = "resample"``, resampled onto it (outside their field of view: 0).

Intensity steps, in this order, per channel, each over the foreground mask
(``foreground_type``: none | otsu | threshold | mean | the name of a mask section, whose
voxels > 0 are the foreground): ``percentile_clip``, ``intensity_window``, then
``normalisation`` (zscore | histogram). Voxels outside the mask get the same map.

Dtypes are uniform across subjects (batching needs it): images float32, labels int32.

``undo(array, record, interp_order)`` takes an array on the preprocessed grid back to the
reference file's grid: unpad, resample back, reorient back. Reorientation is exact;
resampling back with order 0 gives the original labels exactly when ``pixdim`` is no
coarser than the file's voxels.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from sfg_app.arguments import invalid, one_of
from sfg_app.config.schema import FOREGROUND_RULES, INPUT, NETWORK
from sfg_app.config.types import checked_argument
from sfg_app.data import normalisation as norm
from sfg_app.data.dataset import SubjectFiles
from sfg_app.data.resampling import resample, zoom
from sfg_app.errors import ConfigError, DataError
from sfg_app.io import geometry
from sfg_app.io.image import Image, ImageInfo
from sfg_app.io.readers import load_image

KINDS = ("image", "label")
#: The fields of `SectionSpec` that mirror config keys, with those keys (their types).
_CONFIG_KEYS = {name: INPUT.keys[name] for name in (
    "loader", "interp_order", "match_space", "normalisation", "foreground_type",
    "foreground_threshold", "intensity_window", "percentile_clip")}
_CONFIG_KEYS.update({name: NETWORK.keys[name] for name in ("cutoff", "norm_type")})
PADDING_MODES = NETWORK.keys["volume_padding_mode"].type.options


@dataclass(frozen=True)
class SectionSpec:
    """How one input section is read and preprocessed (arguments mirror the config keys).

    ``kind`` is "label" for sections of class labels (segmentation targets, masks): they
    must use ``interp_order = 0`` and become int32; "image" sections become float32.
    """

    name: str
    kind: str = "image"
    loader: str = "auto"
    interp_order: int = 3
    match_space: str = "check"
    normalisation: str = "none"
    foreground_type: str = "none"
    foreground_threshold: float | None = None
    intensity_window: tuple[float, float] | None = None
    percentile_clip: tuple[float, float] | None = None
    cutoff: tuple[float, float] = NETWORK.keys["cutoff"].default
    norm_type: str = NETWORK.keys["norm_type"].default

    def __post_init__(self):
        """Each value mirroring a config key is checked against that key's type (the
        input section's keys, and [NETWORK] cutoff and norm_type), then the rules the
        preprocessing adds."""
        owner = f"section [{self.name}]"
        one_of(self.kind, "kind", KINDS)
        for key, spec in _CONFIG_KEYS.items():
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, checked_argument(spec.type, value, key, owner))
        if self.kind == "label" and (self.interp_order != 0 or self.has_intensity_steps):
            raise ConfigError(
                f"[{self.name}] holds labels, which must keep their values: expected "
                "interp_order = 0 and no normalisation, intensity_window or percentile_clip. "
                f"Received interp_order={self.interp_order}, normalisation="
                f"{self.normalisation!r}, intensity_window={self.intensity_window!r}, "
                f"percentile_clip={self.percentile_clip!r}.")
        if self.foreground_type == "threshold" and self.foreground_threshold is None:
            raise ConfigError(f"[{self.name}] `foreground_type = threshold` needs "
                              "`foreground_threshold`. Received foreground_threshold=None.")
        if self.normalisation == "histogram":
            object.__setattr__(self, "cutoff",
                               norm.check_histogram_arguments(self.cutoff, self.norm_type))

    @property
    def has_intensity_steps(self) -> bool:
        return (self.normalisation != "none" or self.intensity_window is not None
                or self.percentile_clip is not None)

    @property
    def mask_section(self) -> str | None:
        """The section named by ``foreground_type``, if it names one."""
        return None if self.foreground_type in FOREGROUND_RULES else self.foreground_type


@dataclass(frozen=True)
class TransformRecord:
    """How the reference file's grid became the preprocessed grid, for ``undo``.

    ``source`` is the reference file without its voxels: write an undone output with
    ``write_image(path, undo(out, record, order), record.source.affine, like=record.source)``.
    """

    source: ImageInfo
    orientation: np.ndarray            # nibabel ornt, source grid -> reoriented grid
    reoriented_shape: tuple[int, int, int]
    reoriented_affine: np.ndarray
    scale: np.ndarray                  # new voxel size / old voxel size, per axis
    resampled_shape: tuple[int, int, int]
    padding: tuple[tuple[int, int], ...]
    affine: np.ndarray                 # of the preprocessed (padded) grid
    shape: tuple[int, int, int]        # of the preprocessed (padded) grid

    @property
    def resampled(self) -> bool:
        return bool(np.any(self.scale != 1.0)) or self.resampled_shape != self.reoriented_shape


@dataclass
class PreprocessedSubject:
    """A subject's sections on one grid (X, Y, Z, C), its values, and the way back."""

    subject_id: str
    arrays: dict[str, np.ndarray]
    record: TransformRecord
    values: dict[str, float] = field(default_factory=dict)


def check_finite(array: np.ndarray, path: str) -> None:
    """DataError naming the file and counting NaN and infinite voxels, if there are any."""
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if not finite.all():
        nan = int(np.isnan(array).sum())
        raise DataError(
            f"The image {path!r} has {nan} NaN and {finite.size - finite.sum() - nan} infinite "
            f"voxel(s) out of {finite.size}; expected finite values. Replace them in the file "
            "(e.g. with 0) before using it.")


def check_label_values(array: np.ndarray, num_classes: int, path: str) -> None:
    """DataError naming the file, the values found and the allowed range 0..num_classes-1."""
    values = np.unique(array)
    bad = values[(values < 0) | (values >= num_classes) | (values != np.round(values))]
    if bad.size:
        raise DataError(
            f"The label image {path!r} has values {_some(bad, 10)} outside the allowed range "
            f"0..{num_classes - 1} (integers, num_classes={num_classes}); all its values: "
            f"{_some(values, 20)}. Fix the label file, or set num_classes of the task to cover "
            "its values.")


def _some(values: np.ndarray, count: int) -> str:
    shown = ", ".join(f"{float(v):g}" for v in values[:count])
    return shown + (" ..." if values.size > count else "")


def _as_labels(data: np.ndarray, path: str) -> np.ndarray:
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        fractional = np.unique(data[data != np.round(data)])
        raise DataError(f"The label image {path!r} has non-integer values such as "
                        f"{_some(fractional, 5)}; expected class labels. "
                        "Set kind = image for it, or fix the file.")
    # Checked before the cast: int64 4294967298 would become class 2.
    limits = np.iinfo(np.int32)
    if data.size and (data.min() < limits.min or data.max() > limits.max):
        raise DataError(f"The label image {path!r} has values up to {float(data.max()):g} "
                        f"and down to {float(data.min()):g}, beyond any class label "
                        f"({limits.min}..{limits.max}); fix the label file.")
    return data.astype(np.int32)


class ReferenceGrid:
    """Every section of a subject on the reference section's grid: onto it (checked or
    resampled), reoriented, resampled, and the record of how, for ``undo``.

    A class of its own because learning histogram landmarks needs the sections on this
    grid without the intensity steps, and ``undo`` needs only the record.
    """

    def __init__(self, sections: dict[str, SectionSpec], reference: str,
                 pixdim: Sequence[float] | None, axcodes: Sequence[str] | None,
                 volume_padding_size: Sequence[int], volume_padding_mode: str,
                 space_tolerance: float):
        self.sections = sections
        self.reference = reference
        self.pixdim = self._pixdim(pixdim)
        self.axcodes = None if axcodes is None else geometry.standardize_axcodes(axcodes)
        self.padding = self._padding(volume_padding_size)
        self.padding_mode = one_of(volume_padding_mode, "volume_padding_mode", PADDING_MODES)
        self.space_tolerance = float(space_tolerance)

    @staticmethod
    def _pixdim(pixdim) -> np.ndarray | None:
        if pixdim is None:
            return None
        values = np.asarray(pixdim, dtype=np.float64).ravel()
        if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise invalid("pixdim", pixdim, "three positive voxel sizes in mm")
        return values

    @staticmethod
    def _padding(size) -> tuple[tuple[int, int], ...]:
        values = tuple(int(v) for v in size)
        if len(values) != 3 or min(values) < 0 or list(values) != [float(v) for v in size]:
            raise invalid("volume_padding_size", tuple(size), "three non-negative integers")
        return tuple((v, v) for v in values)

    def __call__(self, subject_id: str, images: dict[str, Image]
                 ) -> tuple[dict[str, np.ndarray], TransformRecord]:
        """Every section on the reoriented, resampled (not yet padded) reference grid."""
        if self.reference not in images:
            raise DataError(f"Subject {subject_id!r} has no file for [{self.reference}], the "
                            "section whose grid all others share. Every subject needs it.")
        reference = images[self.reference]
        arrays = {}
        for name, image in images.items():
            spec = self.sections[name]
            check_finite(image.data, image.path)
            data = _as_labels(image.data, image.path) if spec.kind == "label" else \
                image.data.astype(np.float32, copy=False)
            arrays[name] = self._onto_reference(subject_id, spec, image, data, reference)
        orientation = (geometry.orientation_to(reference.affine, self.axcodes)
                       if self.axcodes else np.array([[0, 1], [1, 1], [2, 1]], dtype=float))
        if not geometry.is_identity_orientation(orientation):
            arrays = {name: geometry.reorient_array(array, orientation)
                      for name, array in arrays.items()}
        shape = geometry.reoriented_shape(reference.spatial_shape, orientation)
        affine = geometry.reoriented_affine(reference.affine, reference.spatial_shape,
                                            orientation)
        resampled_affine, resampled_shape = affine, shape
        scale = np.ones(3)
        if self.pixdim is not None:
            resampled_affine, resampled_shape, scale = geometry.resampled_grid(affine, shape,
                                                                               self.pixdim)
        record = TransformRecord(
            source=reference.info, orientation=orientation, reoriented_shape=shape,
            reoriented_affine=affine, scale=scale, resampled_shape=resampled_shape,
            padding=self.padding, shape=tuple(n + 2 * p[0] for n, p in
                                              zip(resampled_shape, self.padding)),
            affine=resampled_affine @ _translation([-p[0] for p in self.padding]))
        if record.resampled:
            arrays = {name: zoom(array, scale, 0.5 * scale - 0.5, resampled_shape,
                                 self.sections[name].interp_order)
                      for name, array in arrays.items()}
        return arrays, record

    def _onto_reference(self, subject_id: str, spec: SectionSpec, image: Image,
                        data: np.ndarray, reference: Image) -> np.ndarray:
        if image is reference:
            return data
        difference = geometry.space_difference(image.spatial_shape, image.affine,
                                               reference.spatial_shape, reference.affine,
                                               self.space_tolerance)
        if difference is None:
            return data
        if spec.match_space == "check":
            raise DataError(
                f"Subject {subject_id!r}: section [{spec.name}] ({image.path}) is not in the "
                f"physical space of [{self.reference}] ({reference.path}): {difference}. "
                "Resample the files onto one grid, or set match_space = resample for "
                f"[{spec.name}] to resample it onto [{self.reference}]'s grid.")
        voxel_map = np.linalg.solve(image.affine, reference.affine)
        return resample(data, voxel_map[:3, :3], voxel_map[:3, 3], reference.spatial_shape,
                        spec.interp_order)

    def pad(self, array: np.ndarray) -> np.ndarray:
        """``array`` with ``volume_padding_size`` voxels added on each side (the last
        step, after the intensity steps, so that padding never enters their statistics)."""
        if not any(before for before, _ in self.padding):
            return array
        return np.pad(array, self.padding + ((0, 0),), mode=self.padding_mode)


class HistogramLandmarks:
    """The landmarks of the sections with ``normalisation = histogram``, kept in
    ``histogram_ref_file``: learned once on the training subjects and read back by every
    later run, inference included, so that one file fixes the intensity scale."""

    def __init__(self, sections: dict[str, SectionSpec], histogram_ref_file: str | None):
        self.specs = {name: spec for name, spec in sections.items()
                      if spec.normalisation == "histogram"}
        if self.specs and not histogram_ref_file:
            raise ConfigError(
                f"Sections {list(self.specs)} use normalisation = histogram, which "
                "needs `histogram_ref_file` (where the learned landmarks are kept). Received "
                f"histogram_ref_file={histogram_ref_file!r}.")
        self.file = histogram_ref_file
        self.landmarks: dict[str, list[list[float]]] | None = None

    def _settings(self) -> dict[str, tuple[tuple[float, float], str]]:
        return {name: (spec.cutoff, spec.norm_type) for name, spec in self.specs.items()}

    def load(self) -> None:
        if not os.path.isfile(self.file):
            raise DataError(
                f"The histogram reference file {self.file!r} does not exist: "
                "the landmarks of normalisation = histogram are learned on the training "
                "subjects (fit_histograms) before any subject is preprocessed. Train first, "
                "or point `histogram_ref_file` at the file that training wrote.")
        self.landmarks = norm.load_landmarks(self.file, self._settings())

    def channel(self, name: str, channel: int, channels: int, path: str) -> list[float]:
        """The reference landmarks of channel ``channel`` of [name], whose image (at
        ``path``) has ``channels`` channels."""
        if len(self.landmarks[name]) != channels:
            raise DataError(
                f"The image {path!r} of [{name}] has {channels} channel(s); the "
                f"histogram landmarks in {self.file!r} were learned on "
                f"{len(self.landmarks[name])}. Use files with the same channels as in training.")
        return self.landmarks[name][channel]

    def learn(self, per_subject: dict[str, dict[str, list[np.ndarray]]],
              subject_count: int) -> None:
        """Writes the reference landmarks averaged over ``per_subject`` (subject id ->
        section -> one landmark array per channel)."""
        learned = {}
        for name, (cutoff, norm_type) in self._settings().items():
            entries = {sid: found[name] for sid, found in per_subject.items() if name in found}
            channels = {len(entry) for entry in entries.values()}
            if len(channels) != 1:
                raise DataError(
                    f"Cannot learn histogram landmarks for [{name}] from "
                    f"{subject_count} training subject(s): expected files with one same "
                    f"number of channels; found {len(entries)} file(s) with "
                    f"{sorted(channels)} channels.")
            learned[name] = {"cutoff": cutoff, "norm_type": norm_type, "landmarks": [
                norm.reference_landmarks(
                    {sid: entry[c] for sid, entry in entries.items()}, f"[{name}]")
                for c in range(channels.pop())]}
        norm.save_landmarks(self.file, learned)


class IntensitySteps:
    """The intensity steps of an image section, per channel over its foreground mask:
    ``percentile_clip``, ``intensity_window``, then the normalisation. It also gives a
    section's own histogram landmarks, so that learning and applying histogram
    standardisation see the same clipped values over the same masks."""

    def __init__(self, histograms: HistogramLandmarks):
        self.histograms = histograms

    def __call__(self, subject_id: str, spec: SectionSpec, arrays: dict[str, np.ndarray],
                 images: dict[str, Image]) -> np.ndarray:
        data = arrays[spec.name]
        out = np.empty(data.shape, dtype=np.float32)
        for channel, mask in enumerate(self.masks(subject_id, spec, arrays, images)):
            values = self._before_normalisation(data[..., channel], mask, spec)
            if spec.normalisation == "zscore":
                values = norm.zscore(values, mask)
            elif spec.normalisation == "histogram":
                values = norm.standardise_histogram(
                    values, mask, norm.landmark_percentiles(spec.cutoff, spec.norm_type),
                    self.histograms.channel(spec.name, channel, data.shape[3],
                                            images[spec.name].path))
            out[..., channel] = values
        return out

    def image_landmarks(self, subject_id: str, spec: SectionSpec,
                        arrays: dict[str, np.ndarray], images: dict[str, Image]
                        ) -> list[np.ndarray]:
        """The section's own landmarks, one array per channel, of the values that
        histogram standardisation would map."""
        percentiles = norm.landmark_percentiles(spec.cutoff, spec.norm_type)
        masks = self.masks(subject_id, spec, arrays, images)
        return [norm.image_landmarks(
            self._before_normalisation(arrays[spec.name][..., c], mask, spec), mask,
            percentiles) for c, mask in enumerate(masks)]

    @staticmethod
    def _before_normalisation(values: np.ndarray, mask: np.ndarray,
                              spec: SectionSpec) -> np.ndarray:
        if spec.percentile_clip is not None:
            values = norm.percentile_clip(values, mask, spec.percentile_clip)
        if spec.intensity_window is not None:
            values = norm.intensity_window(values, spec.intensity_window)
        return values

    @staticmethod
    def masks(subject_id: str, spec: SectionSpec, arrays: dict[str, np.ndarray],
              images: dict[str, Image]) -> list[np.ndarray]:
        """One foreground mask per channel of the section; DataError when one is empty."""
        data = arrays[spec.name]
        if spec.mask_section is not None:
            if spec.mask_section not in arrays:
                raise DataError(f"Subject {subject_id!r} has no file for [{spec.mask_section}], "
                                f"the foreground mask of [{spec.name}].")
            masks = [np.any(arrays[spec.mask_section] > 0, axis=-1)] * data.shape[3]
        else:
            masks = [norm.foreground_mask(data[..., c], spec.foreground_type,
                                          spec.foreground_threshold)
                     for c in range(data.shape[3])]
        for channel, mask in enumerate(masks):
            if not mask.any():
                raise DataError(
                    f"Subject {subject_id!r}: the foreground of [{spec.name}] "
                    f"({images[spec.name].path}, channel {channel}) is empty with "
                    f"foreground_type={spec.foreground_type!r}, foreground_threshold="
                    f"{spec.foreground_threshold!r}. Check the image or the foreground "
                    "settings.")
        return masks


class Preprocessor:
    """The preprocessing of every subject of one application (see the module docstring):
    its files read, put on the ``ReferenceGrid``, the ``IntensitySteps`` applied, padded.

    ``pixdim`` and ``axcodes`` define the grid of all sections (taken from the image
    section's settings by the application). ``histogram_ref_file`` is required when a
    section uses ``normalisation = histogram``: read when it exists, otherwise written by
    ``fit_histograms`` from the training subjects.
    """

    def __init__(self, sections: Sequence[SectionSpec], pixdim: Sequence[float] | None = None,
                 axcodes: Sequence[str] | None = None,
                 volume_padding_size: Sequence[int] = (0, 0, 0),
                 volume_padding_mode: str = "constant", histogram_ref_file: str | None = None,
                 reference_section: str | None = None,
                 space_tolerance: float = geometry.DEFAULT_SPACE_TOLERANCE):
        self.sections = {spec.name: spec for spec in sections}
        if not sections or len(self.sections) != len(sections):
            raise ConfigError(f"Invalid value for argument `sections`. Expected one or more "
                              f"sections with distinct names. Received "
                              f"{[spec.name for spec in sections]}.")
        images = [spec.name for spec in sections if spec.kind == "image"]
        reference = reference_section or (images[0] if images else sections[0].name)
        if reference not in self.sections:
            raise ConfigError(f"Invalid value for argument `reference_section`. Expected one "
                              f"of {list(self.sections)}. Received {reference_section!r}.")
        for spec in sections:
            if spec.mask_section is not None and (spec.mask_section not in self.sections
                                                  or spec.mask_section == spec.name):
                raise ConfigError(
                    f"Invalid value for [{spec.name}] `foreground_type`. Expected one of "
                    f"{', '.join(FOREGROUND_RULES)} or the name of another input "
                    f"section. Received foreground_type={spec.foreground_type!r}.")
        self.grid = ReferenceGrid(self.sections, reference, pixdim, axcodes,
                                  volume_padding_size, volume_padding_mode, space_tolerance)
        self.histograms = HistogramLandmarks(self.sections, histogram_ref_file)
        self.intensity = IntensitySteps(self.histograms)

    def load(self, subject: SubjectFiles, names: Collection[str] | None = None
             ) -> dict[str, Image]:
        """The subject's files of the preprocessed sections (or of ``names`` among them),
        each read by its section's loader."""
        return {name: load_image(path, self.sections[name].loader)
                for name, path in subject.paths.items()
                if name in self.sections and (names is None or name in names)}

    def __call__(self, subject: SubjectFiles) -> PreprocessedSubject:
        processed = self.process(subject.subject_id, self.load(subject))
        processed.values.update(subject.values)
        return processed

    def process(self, subject_id: str, images: dict[str, Image]) -> PreprocessedSubject:
        arrays, record = self.grid(subject_id, images)
        if self.histograms.specs and self.histograms.landmarks is None:
            self.histograms.load()
        for name, spec in self.sections.items():
            if name in arrays and spec.has_intensity_steps:
                arrays[name] = self.intensity(subject_id, spec, arrays, images)
        arrays = {name: np.ascontiguousarray(self.grid.pad(array))
                  for name, array in arrays.items()}
        return PreprocessedSubject(subject_id, arrays, record)

    def fit_histograms(self, subjects: Sequence[SubjectFiles]) -> None:
        """Learn the landmarks on ``subjects`` (the training ones) and write them, unless
        ``histogram_ref_file`` exists already: then it is read and kept."""
        histograms = self.histograms
        if not histograms.specs:
            return
        if not os.path.isfile(histograms.file):
            histograms.learn({subject.subject_id: self._subject_landmarks(subject)
                              for subject in subjects}, len(subjects))
        histograms.load()

    def _subject_landmarks(self, subject: SubjectFiles) -> dict[str, list[np.ndarray]]:
        specs = self.histograms.specs
        needed = {self.grid.reference, *specs, *(spec.mask_section for spec in specs.values())}
        images = self.load(subject, needed)
        arrays, _ = self.grid(subject.subject_id, images)
        return {name: self.intensity.image_landmarks(subject.subject_id, spec, arrays, images)
                for name, spec in specs.items() if name in arrays}


def _translation(offset: Sequence[float]) -> np.ndarray:
    step = np.eye(4)
    step[:3, 3] = offset
    return step


def undo(array: np.ndarray, record: TransformRecord, interp_order: int = 0) -> np.ndarray:
    """``array`` on the preprocessed grid, (X, Y, Z[, C]), back on the grid of
    ``record.source``: unpad, resample back (``interp_order``), reorient back."""
    array = np.asarray(array)
    squeeze = array.ndim == 3
    if squeeze:
        array = array[..., None]
    if array.ndim != 4 or tuple(array.shape[:3]) != tuple(record.shape):
        raise ValueError(f"undo expects an array of spatial shape {record.shape} (the "
                         f"preprocessed grid); got {array.shape}.")
    crop = tuple(slice(before, n - after) for (before, after), n in
                 zip(record.padding, array.shape[:3]))
    array = array[crop]
    if record.resampled:
        array = zoom(array, 1.0 / record.scale, 0.5 / record.scale - 0.5,
                     record.reoriented_shape, interp_order)
    array = geometry.reorient_array(array, geometry.invert_orientation(record.orientation))
    return array[..., 0] if squeeze else array
