"""Small window sources for the tests of the window source and of the tf.data adapter.

A helper module, not a test module: two test files build the same sources, and a test
module imports no other test module.
"""

import threading

import numpy as np

from sfg_app.data.augmentation import Augmenter, IntensityAugmentation, SpatialAugmentation
from sfg_app.data.samplers import BalancedSampler
from sfg_app.data.windows import WindowSource


def make_subjects(count=3, shape=(12, 10, 8), seed=0):
    """Subjects with an image, labels and a CT; the last one lacks CT (optional section);
    an image-level value per subject."""
    rng = np.random.default_rng(seed)
    subjects = []
    for index in range(count):
        subject = {"MR": rng.standard_normal((*shape, 2)).astype(np.float32),
                   "LABEL": rng.integers(0, 3, (*shape, 1)).astype(np.int16),
                   "AGE": np.array([20.0 + index], np.float32)}
        if index < count - 1:
            subject["CT"] = rng.standard_normal((*shape, 1)).astype(np.float32)
        subjects.append(subject)
    return subjects


def make_source(subjects=None, augment=True, **arguments):
    """A `WindowSource` over ``subjects`` (default: ``make_subjects()``): balanced 6x6x4
    windows, augmented unless ``augment`` is false; ``arguments`` replace the defaults."""
    augmenter = Augmenter(
        spatial=SpatialAugmentation(random_flipping_axes=(0,), rotation_angle=(-10, 10),
                                    do_elastic_deformation=True, deformation_sigma=1.0,
                                    proportion_to_deform=0.5),
        intensity=IntensityAugmentation(gamma_range=(0.8, 1.2), noise_std=0.05),
        image_sections=("MR",), label_sections=("LABEL",)) if augment else None
    defaults = dict(sampler=BalancedSampler((6, 6, 4), sampling_map="LABEL"),
                    augmenter=augmenter, label_sections=("LABEL",), sample_per_volume=2,
                    seed=3)
    return WindowSource(make_subjects() if subjects is None else subjects,
                        **{**defaults, **arguments})


class CountingSource:
    """A source that counts the windows computed (threads share the counter)."""

    def __init__(self, source):
        self.source, self.computed = source, 0
        self._lock = threading.Lock()

    def __call__(self, index):
        with self._lock:
            self.computed += 1
        return self.source(index)
