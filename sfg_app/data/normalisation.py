"""Intensity normalisation of one channel: foreground masks, clipping, windowing, z-score,
and Nyul histogram standardisation (the preprocessing steps; random intensity changes
are augmentation, `sfg_app.data.augmentation`).

Histogram standardisation (Nyul, Udupa and Zhang, IEEE TMI 2000, as in NiftyNet): each
training image's landmarks (intensity percentiles over its foreground) are mapped
linearly so that the ``cutoff`` percentiles land on 0 and 1, and averaged over the
training images: the reference landmarks. An image is then standardised by the piecewise
linear map from its own landmarks to the reference ones, the first and last pieces
extended beyond the cutoffs. NiftyNet put the standard scale on [0, 100] and whitened
afterwards; here one normalisation is chosen, so the scale is [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import yaml

from sfg_app.arguments import (HISTOGRAM_LANDMARKS, histogram_cutoff_problem, invalid,
                               one_of)
from sfg_app.errors import DataError
from sfg_app.io.atomic import atomic_write_text

NORM_TYPES = HISTOGRAM_LANDMARKS


def foreground_mask(channel: np.ndarray, foreground_type: str,
                    threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the voxels that intensity statistics are computed over, by one of
    the rules of ``[input] foreground_type`` (the config schema's ``FOREGROUND_RULES``)."""
    if foreground_type == "none":
        return np.ones(channel.shape, dtype=bool)
    if foreground_type == "threshold":
        return channel > threshold
    if foreground_type == "mean":
        return channel > channel.mean()
    if foreground_type == "otsu":
        return channel > otsu_threshold(channel)
    raise ValueError(f"Unknown foreground_type {foreground_type!r}.")


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of a 256-bin histogram."""
    low, high = float(values.min()), float(values.max())
    if low == high:
        return low
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight_below = np.cumsum(counts)[:-1].astype(np.float64)
    weight_above = counts.sum() - weight_below
    sum_below = np.cumsum(counts * centres)[:-1]
    mean_below = sum_below / np.maximum(weight_below, 1)
    mean_above = (np.sum(counts * centres) - sum_below) / np.maximum(weight_above, 1)
    between = weight_below * weight_above * (mean_below - mean_above) ** 2
    return float(edges[1:-1][np.argmax(between)])


def percentile_clip(channel: np.ndarray, mask: np.ndarray,
                    percentiles: Sequence[float]) -> np.ndarray:
    """Clip to the given percentiles (0..100) of the foreground values."""
    low, high = (float(v) for v in np.percentile(channel[mask], percentiles))
    return np.clip(channel, low, high)


def intensity_window(channel: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Clip to ``[low, high]`` (e.g. a CT window in HU) and rescale that range to [0, 1]."""
    low, high = (float(v) for v in window)
    return (np.clip(channel, low, high) - low) / (high - low)


def zscore(channel: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the foreground; every voxel gets the same map.

    A constant foreground is only shifted (dividing by a zero deviation is no scaling).
    """
    values = channel[mask]
    std = float(values.std())
    return (channel - float(values.mean())) / (std if std > 0 else 1.0)


def landmark_percentiles(cutoff: Sequence[float], norm_type: str) -> np.ndarray:
    """The percentiles (0..1) whose intensities are an image's landmarks."""
    inner = NORM_TYPES[norm_type]
    return np.array([cutoff[0], *inner, cutoff[1]], dtype=np.float64)


def check_histogram_arguments(cutoff: Sequence[float], norm_type: str) -> tuple[float, float]:
    one_of(norm_type, "norm_type", tuple(NORM_TYPES))
    try:
        cutoff = tuple(float(c) for c in cutoff)
        problem = histogram_cutoff_problem(cutoff, norm_type)
    except (TypeError, ValueError):
        problem = histogram_cutoff_problem((-1.0, -1.0), norm_type)
    if problem:
        raise invalid("cutoff", cutoff, problem)
    return cutoff


def image_landmarks(channel: np.ndarray, mask: np.ndarray, percentiles: np.ndarray) -> np.ndarray:
    return np.percentile(channel[mask], 100.0 * percentiles)


def reference_landmarks(landmarks: dict[str, np.ndarray], where: str) -> list[float]:
    """Average of the images' landmarks (per subject id), each first mapped so that its
    cutoffs land on 0 and 1."""
    scaled = []
    for subject_id, values in landmarks.items():
        span = values[-1] - values[0]
        if span <= 0:
            raise DataError(
                f"Cannot learn histogram landmarks for {where}: training subject "
                f"{subject_id!r} has the same intensity {values[0]:g} at both cutoff "
                "percentiles (a constant foreground). Check the image and its foreground_type.")
        scaled.append((values - values[0]) / span)
    return [float(v) for v in np.mean(scaled, axis=0)]


def standardise_histogram(channel: np.ndarray, mask: np.ndarray, percentiles: np.ndarray,
                          reference: Sequence[float]) -> np.ndarray:
    """Piecewise linear map of the image's landmarks onto ``reference``, ends extended.

    Two equal landmarks (a flat stretch of the histogram, often background) make that
    piece flat rather than a division by zero.
    """
    own = image_landmarks(channel, mask, percentiles)
    reference = np.asarray(reference, dtype=np.float64)
    steps = np.diff(own)
    slopes = np.divide(np.diff(reference), steps, out=np.zeros_like(steps), where=steps > 0)
    intercepts = (reference[:-1] - slopes * own[:-1]).astype(np.float32)
    piece = np.searchsorted(own[1:-1], channel, side="right")
    return slopes.astype(np.float32)[piece] * channel + intercepts[piece]


def save_landmarks(path: str, landmarks: dict[str, dict]) -> None:
    """YAML ``{section: {cutoff, norm_type, landmarks: [one list per channel]}}``."""
    document = {name: {"cutoff": [float(c) for c in entry["cutoff"]],
                       "norm_type": str(entry["norm_type"]),
                       "landmarks": [[float(v) for v in channel]
                                     for channel in entry["landmarks"]]}
                for name, entry in landmarks.items()}
    atomic_write_text(path, "# Nyul histogram landmarks learned on the training subjects\n"
                      + yaml.safe_dump(document, sort_keys=True))


def load_landmarks(path: str, settings: dict[str, tuple[tuple[float, float], str]]
                   ) -> dict[str, list[list[float]]]:
    """Per-channel landmarks of each section in ``settings`` (name -> (cutoff, norm_type)),
    from a file ``save_landmarks`` wrote with the same cutoff and norm_type."""
    try:
        with open(path, encoding="utf-8") as stream:
            document = yaml.safe_load(stream)
        stored = {name: (tuple(float(c) for c in document[name]["cutoff"]),
                         document[name]["norm_type"],
                         [[float(v) for v in channel] for channel in document[name]["landmarks"]])
                  for name in settings if name in document}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"Cannot read the histogram reference file {path!r}: "
                        f"{type(err).__name__}: {err}. Delete it to learn the landmarks "
                        "again from the training subjects.") from err
    landmarks = {}
    for name, (cutoff, norm_type) in settings.items():
        if name not in stored:
            raise DataError(f"The histogram reference file {path!r} has no landmarks for "
                            f"[{name}]. Delete it to learn the landmarks again from the "
                            "training subjects.")
        stored_cutoff, stored_type, channels = stored[name]
        size = len(landmark_percentiles(cutoff, norm_type))
        if (not np.allclose(stored_cutoff, cutoff) or stored_type != norm_type
                or any(len(values) != size for values in channels)):
            raise DataError(
                f"The histogram landmarks of [{name}] in {path!r} were learned with cutoff="
                f"{stored_cutoff}, norm_type={stored_type!r}; the section says cutoff="
                f"{tuple(cutoff)}, norm_type={norm_type!r}. Use the same settings, or delete "
                "the file to learn again.")
        landmarks[name] = channels
    return landmarks
