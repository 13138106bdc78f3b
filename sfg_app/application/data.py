"""Settings -> the data engine: which sections play which role, subjects, split, windows.

A section's role follows from how the config uses it, never from a flag the user must
keep in step: `[MULTITASK] image` sections are the network's input; segmentation
targets, masks, the label map of `balanced` sampling and foreground-mask sections hold
labels (nearest-neighbour resampling, integer values); sections with `value_column` hold
one value per subject; every other used section (a regression target, a probability
map) is an image. Input sections nothing uses are not read.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import warnings

import numpy as np

from sfg_app.config.schema import FOREGROUND_RULES
from sfg_app.data.augmentation import Augmenter, IntensityAugmentation, SpatialAugmentation
from sfg_app.data.cache import VolumeCache
from sfg_app.data.dataset import (SectionSource, SubjectFiles, find_subjects,
                                  load_or_make_split, subjects_in_phase)
from sfg_app.data.preprocessing import (PreprocessedSubject, Preprocessor, SectionSpec,
                                        check_label_values)
from sfg_app.data.windows import WindowSource
from sfg_app.errors import ConfigError, DataError, SFGWarning
from sfg_app.io.run_folder import RunFolder
from sfg_app.registry import SAMPLERS


@dataclasses.dataclass(frozen=True)
class SectionRoles:
    """What the config makes of each input section: the network's image sections, the
    label sections, the one-value-per-subject sections, those read at all (``used``),
    and the optional targets that a subject may lack."""

    images: tuple[str, ...]
    labels: frozenset[str]
    values: frozenset[str]
    used: tuple[str, ...]
    optional: frozenset[str]

    @property
    def volumes(self) -> tuple[str, ...]:
        return tuple(name for name in self.used if name not in self.values)


def section_roles(settings, tasks: dict) -> SectionRoles:
    """The roles that follow from how the settings use each section (module docstring)."""
    inputs, network = settings.inputs, settings.network
    images = tuple(settings.multitask.image)
    labels, required, optional_targets = set(), set(images), set()
    for task in tasks.values():
        if task.mask:
            labels.add(task.mask)
            required.add(task.mask)
        if task.label_target:
            labels.add(task.target)
        (optional_targets if task.optional_target else required).add(task.target)
    sampling_map = network.sampling_map  # for balanced, filled in by the validation
    if sampling_map:
        required.add(sampling_map)
        if network.window_sampling == "balanced":
            labels.add(sampling_map)
    for name in list(required | optional_targets):
        foreground = inputs[name].foreground_type
        if foreground not in FOREGROUND_RULES:
            labels.add(foreground)
            required.add(foreground)
    used = tuple(name for name in inputs if name in required | optional_targets)
    values = frozenset(name for name in used if inputs[name].value_column)
    return SectionRoles(images=images, labels=frozenset(labels), values=values, used=used,
                        optional=frozenset(optional_targets - required))


def _check_one_grid(settings, roles: SectionRoles) -> None:
    """Every volume section leaves ``pixdim`` and ``axcodes`` to the image section."""
    reference = roles.images[0]
    grid = {key: getattr(settings.inputs[reference], key) for key in ("pixdim", "axcodes")}
    for name in roles.volumes:
        for key, value in grid.items():
            own = getattr(settings.inputs[name], key)
            if own is not None and own != value:
                raise ConfigError(
                    f"[{name}] {key} = {own}, but the image section [{reference}] has "
                    f"{key} = {value}: every section of a subject is put on the image "
                    f"section's grid. Set {key} on [{reference}] only.")


class SubjectCatalog:
    """The run's subjects: the files of the used sections, matched by subject id, and
    the split that puts each subject in a phase. Both are read once, so that every
    phase and every check of a run sees the same subjects."""

    def __init__(self, settings, roles: SectionRoles):
        self.settings = settings
        self.roles = roles

    def sources(self) -> list[SectionSource]:
        return [SectionSource.of_section(name, self.settings.inputs[name],
                                         optional=name in self.roles.optional)
                for name in self.roles.used]

    @functools.cached_property
    def subjects(self) -> list[SubjectFiles]:
        return find_subjects(self.sources())

    @functools.cached_property
    def split(self) -> dict[str, str]:
        system, training = self.settings.system, self.settings.training
        return load_or_make_split(
            str(system.dataset_split_file), [s.subject_id for s in self.subjects],
            training.exclude_fraction_for_validation, training.exclude_fraction_for_inference,
            system.seed)

    def phase(self, phase: str) -> list[SubjectFiles]:
        """The subjects of `phase` (training, validation, inference), or all of them."""
        if phase == "all":
            return list(self.subjects)
        return subjects_in_phase(self.subjects, self.split, phase)


class SubjectPreprocessing:
    """The settings' `Preprocessor`, and a subject through it with the checks that only
    the run can make (label values against the tasks' classes, volumes thinner than the
    window); `sfg_train --check` runs the same checks without intensity normalisation."""

    def __init__(self, settings, tasks: dict, roles: SectionRoles,
                 window_size: tuple[int, int, int], catalog: SubjectCatalog):
        self.settings = settings
        self.tasks = tasks
        self.roles = roles
        self.window_size = window_size
        self.catalog = catalog

    @functools.cached_property
    def preprocessor(self) -> Preprocessor:
        return self._preprocessor(normalise=True)

    def _preprocessor(self, normalise: bool) -> Preprocessor:
        settings, network = self.settings, self.settings.network
        specs = []
        for name in self.roles.volumes:
            section = settings.inputs[name]
            specs.append(SectionSpec(
                name=name, kind="label" if name in self.roles.labels else "image",
                loader=section.loader, interp_order=section.interp_order,
                match_space=section.match_space,
                normalisation=section.normalisation if normalise else "none",
                foreground_type=section.foreground_type,
                foreground_threshold=section.foreground_threshold,
                intensity_window=section.intensity_window,
                percentile_clip=section.percentile_clip,
                cutoff=tuple(network.cutoff), norm_type=network.norm_type))
        image = settings.inputs[self.roles.images[0]]
        return Preprocessor(
            specs, pixdim=image.pixdim, axcodes=image.axcodes,
            volume_padding_size=tuple(network.volume_padding_size),
            volume_padding_mode=network.volume_padding_mode,
            histogram_ref_file=str(network.histogram_ref_file),
            reference_section=self.roles.images[0])

    def fit_intensity_references(self) -> None:
        """Learn histogram landmarks on the training split, once; later runs reuse them."""
        histograms = self.preprocessor.histograms
        if histograms.specs and not os.path.exists(histograms.file):
            self.preprocessor.fit_histograms(self.catalog.phase("training"))

    def preprocess(self, subject: SubjectFiles, sections=None) -> PreprocessedSubject:
        """One subject on the image grid, its labels checked against the tasks' classes.

        `sections`: only these (e.g. the image sections at inference, where targets may
        not exist).
        """
        if sections is not None:
            subject = dataclasses.replace(subject, paths={
                k: v for k, v in subject.paths.items() if k in sections})
        return self._checked(self.preprocessor, subject)

    def _checked(self, preprocessor: Preprocessor, subject: SubjectFiles) -> PreprocessedSubject:
        processed = preprocessor(subject)
        self._check_thickness(processed)
        for task in self.tasks.values():
            num_classes = getattr(task, "num_classes", None)
            if num_classes and task.target in processed.arrays:
                check_label_values(processed.arrays[task.target], num_classes,
                                   subject.paths[task.target])
        return processed

    def check_files(self) -> tuple[int, list[str]]:
        """`sfg_train --check`: every file of every subject read and put on the image grid
        (header, shape, affine, finite values, matching grids, label values), without
        intensity normalisation (histogram landmarks need training). Returns the number of
        files read and a problem per failing subject, each naming its files."""
        preprocessor = self._preprocessor(normalise=False)
        images, problems, files, channels = self.roles.images, [], 0, {}
        for subject in self.catalog.subjects:
            files += len(subject.paths)
            try:
                processed = self._checked(preprocessor, subject)
            except DataError as error:
                problems.append(f"{subject.subject_id}: {error}")
                continue
            count = sum(processed.arrays[name].shape[-1] for name in images)
            channels.setdefault(count, []).append(subject.subject_id)
        if len(channels) > 1:
            problems.append("The image sections' channels differ between subjects: " + "; ".join(
                f"{count} channel(s): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
                for count, ids in sorted(channels.items())) + ". Every subject needs the same.")
        return files, problems

    def _check_thickness(self, processed: PreprocessedSubject) -> None:
        """A warning per axis along which the volume (on the preprocessed grid, before
        `volume_padding_size`) is thinner than the window: it is padded to the window,
        which is what a 2D slice through a 3D network or a cropped field of view gets."""
        record = processed.record
        shape = tuple(n - low - high for n, (low, high) in zip(record.shape, record.padding))
        for axis, (size, window) in enumerate(zip(shape, self.window_size)):
            if size < window:
                warnings.warn(
                    f"{processed.subject_id} ({record.source.path}): {size} voxel(s) along "
                    f"axis {'xyz'[axis]} after preprocessing, thinner than the window's "
                    f"{window}; it is padded to the window. If it is a 2D image, use a 2D "
                    f"window (spatial_window_size with 1 along z); else check pixdim and the "
                    "window size.", SFGWarning, stacklevel=2)


class PhaseVolumes:
    """The preprocessed subjects of each phase, preprocessed once and kept by
    `[NETWORK] cache` (one cache per phase for the run's life, whichever window sources
    read it), under a fingerprint that a change of settings or files invalidates."""

    def __init__(self, settings, roles: SectionRoles, catalog: SubjectCatalog,
                 preprocessing: SubjectPreprocessing):
        self.settings = settings
        self.roles = roles
        self.catalog = catalog
        self.preprocessing = preprocessing
        self._caches: dict[str, VolumeCache] = {}

    def __call__(self, phase: str) -> VolumeCache:
        if phase not in self._caches:
            self._caches[phase] = self._new_volumes(phase)
        return self._caches[phase]

    def _arrays(self, subject: SubjectFiles) -> dict[str, np.ndarray]:
        processed = self.preprocessing.preprocess(subject)
        arrays = dict(processed.arrays)
        for name, value in processed.values.items():
            arrays[name] = np.atleast_1d(np.asarray(value, np.float32))
        return arrays

    def _new_volumes(self, phase: str) -> VolumeCache:
        subjects = self.catalog.phase(phase)
        if not subjects:
            raise DataError(f"The {phase} split of {self.settings.system.dataset_split_file} "
                            "has no subject.")
        folder = str(RunFolder(self.settings.system.model_dir).cache(phase))
        return VolumeCache(lambda i: self._arrays(subjects[i]), len(subjects),
                           cache=self.settings.network.cache, folder=folder,
                           fingerprint=self._fingerprint(subjects))

    def _fingerprint(self, subjects) -> str:
        """What the preprocessed volumes depend on: the settings that shape them and
        the input files (path, size, modification time)."""
        settings = self.settings.to_dict()
        relevant = {name: settings[name] for name in self.roles.used}
        relevant["NETWORK"] = {k: settings["NETWORK"][k] for k in (
            "volume_padding_size", "volume_padding_mode", "cutoff", "norm_type")}
        files = []
        for subject in subjects:
            for name, path in sorted(subject.paths.items()):
                stat = os.stat(path)
                files.append([subject.subject_id, name, path, stat.st_size, stat.st_mtime_ns])
        text = json.dumps([relevant, files], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class WindowSources:
    """The settings' sampler and augmentation, and the window sources that draw
    training and validation windows with them from a phase's volumes."""

    def __init__(self, settings, roles: SectionRoles, window_size: tuple[int, int, int],
                 volumes: PhaseVolumes):
        self.settings = settings
        self.roles = roles
        self.window_size = window_size
        self.volumes = volumes

    def sampler(self):
        network = self.settings.network
        return SAMPLERS.get(network.window_sampling)(
            self.window_size, sampling_map=network.sampling_map,
            label_sections=tuple(self.roles.labels))

    def augmenter(self) -> Augmenter | None:
        training = self.settings.training
        spatial = None
        if (training.random_flipping_axes or training.rotation_angle
                or training.scaling_percentage or training.do_elastic_deformation):
            spatial = SpatialAugmentation(
                random_flipping_axes=tuple(training.random_flipping_axes),
                flip_probability=training.flip_probability,
                rotation_angle=training.rotation_angle,
                scaling_percentage=training.scaling_percentage,
                do_elastic_deformation=training.do_elastic_deformation,
                num_ctrl_points=training.num_ctrl_points,
                deformation_sigma=training.deformation_sigma,
                proportion_to_deform=training.proportion_to_deform)
        intensity = None
        if training.bias_field_range or training.gamma_range or training.noise_std:
            intensity = IntensityAugmentation(
                bias_field_range=training.bias_field_range, bf_order=training.bf_order,
                gamma_range=training.gamma_range, noise_std=training.noise_std)
        if spatial is None and intensity is None:
            return None
        return Augmenter(spatial=spatial, intensity=intensity,
                         image_sections=self.roles.images, label_sections=self.roles.labels)

    def source(self, phase: str, seed: int, augment: bool) -> WindowSource:
        training = self.settings.training
        return WindowSource(self.volumes(phase), sampler=self.sampler(),
                            augmenter=self.augmenter() if augment else None,
                            label_sections=self.roles.labels,
                            sample_per_volume=training.sample_per_volume, seed=seed)


class RunData:
    """The data of a run as the application sees it, made from the settings once: the
    role of each section and the window size, and one collaborator per job (finding the
    subjects, preprocessing them, keeping their volumes, drawing windows). Its methods
    are the application's questions, each answered by the collaborator that owns it."""

    def __init__(self, settings, tasks: dict):
        self.roles = section_roles(settings, tasks)
        self.window_size = tuple(settings.inputs[self.roles.images[0]].spatial_window_size)
        _check_one_grid(settings, self.roles)
        self.catalog = SubjectCatalog(settings, self.roles)
        self.preprocessing = SubjectPreprocessing(settings, tasks, self.roles,
                                                  self.window_size, self.catalog)
        self.volumes = PhaseVolumes(settings, self.roles, self.catalog, self.preprocessing)
        self.windows = WindowSources(settings, self.roles, self.window_size, self.volumes)

    @property
    def subjects(self) -> list[SubjectFiles]:
        return self.catalog.subjects

    def sources(self) -> list[SectionSource]:
        return self.catalog.sources()

    def phase(self, phase: str) -> list[SubjectFiles]:
        return self.catalog.phase(phase)

    def fit_intensity_references(self) -> None:
        self.preprocessing.fit_intensity_references()

    def preprocess(self, subject: SubjectFiles, sections=None) -> PreprocessedSubject:
        return self.preprocessing.preprocess(subject, sections)

    def check_files(self) -> tuple[int, list[str]]:
        return self.preprocessing.check_files()

    def sampler(self):
        return self.windows.sampler()

    def window_source(self, phase: str, seed: int, augment: bool) -> WindowSource:
        return self.windows.source(phase, seed, augment)
