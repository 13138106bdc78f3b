"""Per-subject evaluation metrics (numpy and scipy only), and their CSV and summary.

Arrays are a subject's volumes on one grid: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` (a 2D image
has ``Z = 1``; ``(X, Y)`` works too), labels as integers, values in the target's units.
A ``mask`` (same spatial shape, counted where ``mask > 0.5``) restricts every metric to
its voxels. ``spacing`` is the voxel size in millimetres along the array's spatial axes.

Each metric reproduces a reference implementation (tests/evaluation/test_metrics_reference.py
compares them on random and phantom volumes):
- Dice: SimpleITK's ``LabelOverlapMeasuresImageFilter``, per class.
- Hausdorff distance: SimpleITK's ``HausdorffDistanceImageFilter`` (voxel sets); HD95: the
  larger of the two directed 95th percentiles of SimpleITK's surface distances
  (``LabelContour`` voxels read on ``Abs(SignedMaurerDistanceMap)``; the image border is
  not a surface).
- PSNR and SSIM: scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity``
  (7-voxel uniform window, sample covariance, the border strip left out), with the same
  data range: the truth's ``max - min`` over the compared voxels unless one is given.

Conventions for empty structures (never a crash):
- Dice of a class: ``NaN`` when the class is absent from both prediction and truth
  (nothing to score), 0 when it is absent from one of them only.
- Hausdorff distances of a class: ``NaN`` when the class is absent from the prediction
  or the truth (a distance to nothing is undefined). Summaries skip NaN and report how
  many values they used.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from sfg_app.errors import DataError
from sfg_app.io.atomic import atomic_write_text

# ---- segmentation ----

def dice_score(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean arrays, ``2 |P & T| / (|P| + |T|)``; NaN when both are empty."""
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(prediction, truth).sum()) / total


def hausdorff_distance(prediction: np.ndarray, truth: np.ndarray,
                       spacing: Sequence[float]) -> float:
    """Hausdorff distance in millimetres between the two sets of voxel centres.

    The larger of the two directed distances, each the largest distance from a voxel of one
    structure to the nearest voxel of the other (Euclidean, ``spacing`` mm per axis): the
    value of SimpleITK's ``HausdorffDistanceImageFilter``. Whole structures, not surfaces,
    so it differs from ``surface_hausdorff_distance(..., percentile=100)`` when a structure
    has a hole or lies inside the other. NaN when either is empty.
    """
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if not prediction.any() or not truth.any():
        return math.nan
    # The union's bounding box holds every voxel and every nearest voxel: distances unchanged.
    box = _bounding_box(prediction | truth, margin=0)
    prediction, truth = prediction[box], truth[box]

    def directed(source, target):
        return float(ndimage.distance_transform_edt(~target, sampling=spacing)[source].max())

    return max(directed(prediction, truth), directed(truth, prediction))


def _bounding_box(binary: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The slices of the smallest box around ``binary``'s voxels, ``margin`` voxels wider on
    each side where the image allows."""
    occupied = np.argwhere(binary)
    start = np.maximum(occupied.min(axis=0) - margin, 0)
    stop = occupied.max(axis=0) + 1 + margin
    return tuple(slice(a, b) for a, b in zip(start, stop))


def _contour(binary: np.ndarray, connectivity: int) -> np.ndarray:
    """Voxels of ``binary`` with a neighbour outside it, neighbours sharing a face
    (``connectivity=1``) or a face, edge or corner (``binary.ndim``). Outside the image
    counts as inside, as in SimpleITK: the image border is not a contour."""
    structure = ndimage.generate_binary_structure(binary.ndim, connectivity)
    return binary & ~ndimage.binary_erosion(binary, structure, border_value=1)


def surface_distances(source: np.ndarray, target: np.ndarray,
                      spacing: Sequence[float]) -> np.ndarray:
    """Distances (mm) from each surface voxel of ``source`` to the surface of ``target``.

    SimpleITK's recipe, which this reproduces exactly: the surface voxels of ``source`` are
    its ``LabelContour`` (voxels with a face-neighbour outside it), and their distances are
    read from ``Abs(SignedMaurerDistanceMap(target))``, the distance from voxel centres to
    the nearest voxel of ``target``'s fully connected contour (a neighbour outside it by a
    face, edge or corner; a thicker contour than the face one). The image border is not a
    surface, unlike MONAI's edges, so a structure filling the image has none: neither array
    may fill it.
    """
    target_contour = _contour(target, connectivity=target.ndim)
    distance_to_target = ndimage.distance_transform_edt(~target_contour, sampling=spacing)
    return distance_to_target[_contour(source, connectivity=1)]


def surface_hausdorff_distance(prediction: np.ndarray, truth: np.ndarray,
                               spacing: Sequence[float], percentile: float = 95.0) -> float:
    """Percentile Hausdorff distance between the surfaces in millimetres (HD95 by default).

    The larger of the two directed ``percentile``-th surface distances (prediction to
    truth, truth to prediction; numpy's linear interpolation), MONAI's convention rather
    than the percentile of the pooled distances, with SimpleITK's surfaces and distances
    (see ``surface_distances``). ``percentile=100`` gives the largest surface distance,
    which is not ``hausdorff_distance`` for a structure with a hole or inside the other.
    A 2D image stored with ``Z = 1`` gets its 2D contour (the border is not a surface).
    NaN when either structure is empty or fills the image (it has no surface then).
    """
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if not prediction.any() or not truth.any() or prediction.all() or truth.all():
        return math.nan
    # One background voxel around the union keeps every contour and nearest contour voxel.
    box = _bounding_box(prediction | truth, margin=1)
    prediction, truth = prediction[box], truth[box]
    return max(float(np.percentile(surface_distances(prediction, truth, spacing), percentile)),
               float(np.percentile(surface_distances(truth, prediction, spacing), percentile)))


# ---- regression ----

def _errors(prediction, truth) -> np.ndarray:
    """``prediction - truth`` in float64 (unsigned or integer inputs cannot wrap)."""
    return np.asarray(prediction, np.float64) - np.asarray(truth, np.float64)


def mean_absolute_error(prediction, truth) -> float:
    errors = _errors(prediction, truth)
    return float(np.mean(np.abs(errors))) if errors.size else math.nan


def root_mean_squared_error(prediction, truth) -> float:
    errors = _errors(prediction, truth)
    return float(np.sqrt(np.mean(np.square(errors)))) if errors.size else math.nan


def _data_range(truth: np.ndarray, data_range: float | None) -> float:
    """The explicit ``data_range``, else the truth's ``max - min`` (inside the mask)."""
    if data_range is not None:
        return float(data_range)
    return float(truth.max() - truth.min()) if truth.size else math.nan


def psnr(prediction: np.ndarray, truth: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(L^2 / MSE)``: scikit-image's
    ``peak_signal_noise_ratio(truth, prediction, data_range=L)``.

    ``L`` is ``data_range``, by default the truth's range over the compared voxels (for a
    CT in HU over a body mask, about the bone-to-air span). ``inf`` for a perfect
    prediction; NaN when the range is 0 (a constant truth and no ``data_range``).
    """
    value_range = _data_range(np.asarray(truth, np.float64), data_range)
    errors = _errors(prediction, truth)
    mse = float(np.mean(np.square(errors))) if errors.size else math.nan
    if not value_range > 0 or math.isnan(mse):
        return math.nan
    return math.inf if mse == 0 else 10.0 * math.log10(value_range ** 2 / mse)


def _ssim_window(shape: Sequence[int], win_size: int) -> tuple[int, ...]:
    """The window's length on each axis: ``win_size``, or on a shorter axis the largest odd
    length that fits it (1 on a singleton or 2-voxel axis: no filtering along it)."""
    return tuple(max(min(win_size, n if n % 2 else n - 1), 1) for n in shape)


def ssim_map(prediction: np.ndarray, truth: np.ndarray, data_range: float,
             win_size: int = 7, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Local SSIM (Wang et al. 2004) of two same-shape single-channel arrays, per voxel.

    scikit-image's ``structural_similarity(..., win_size=7, gaussian_weights=False,
    use_sample_covariance=True, full=True)`` map: local statistics over a uniform
    ``win_size`` window, sample (co)variances (``N / (N - 1)`` for ``N`` voxels in the
    window), ``C1 = (k1 L)^2`` and ``C2 = (k2 L)^2`` with ``L = data_range`` in the arrays'
    units. Unlike scikit-image, which refuses them, an axis shorter than ``win_size`` gets
    the largest odd window that fits it (``_ssim_window``): a 2D image stored with
    ``Z = 1`` gets the 2D SSIM of the squeezed image, a 4-slice volume a 7x7x3 window.
    NaN where the window does not fit inside the image (within ``(w - 1) // 2`` voxels of
    the border on an axis with window ``w``, the strip scikit-image crops), and everywhere
    when every axis is shorter than 3 voxels (a one-voxel window has no variance).
    """
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)) \
            or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"Invalid value for argument `win_size`. Expected an odd integer "
                         f">= 3. Received win_size={win_size!r}.")
    x, y = np.asarray(prediction, np.float64), np.asarray(truth, np.float64)
    window = _ssim_window(x.shape, win_size)
    count = math.prod(window)
    result = np.full(x.shape, math.nan)
    if count < 2:
        return result

    def local_mean(a):
        return ndimage.uniform_filter(a, window)

    mu_x, mu_y = local_mean(x), local_mean(y)
    sample = count / (count - 1)
    var_x = sample * (local_mean(x * x) - mu_x * mu_x)
    var_y = sample * (local_mean(y * y) - mu_y * mu_y)
    cov = sample * (local_mean(x * y) - mu_x * mu_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    local = (((2 * mu_x * mu_y + c1) * (2 * cov + c2))
             / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    valid = tuple(slice((w - 1) // 2, n - (w - 1) // 2) for w, n in zip(window, x.shape))
    result[valid] = local[valid]
    return result


def ssim(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
         data_range: float | None = None) -> float:
    """Mean SSIM of two single-channel 2D or 3D arrays, the 7-voxel window of ``ssim_map``.

    Without a mask: scikit-image's ``structural_similarity(truth, prediction,
    data_range=L, win_size=7, gaussian_weights=False, use_sample_covariance=True)``, the
    mean over the voxels away from the border. With one: the mean of the same map over
    the mask's voxels away from the border; windows still read the image outside the mask.
    ``L`` is ``data_range``, by default the truth's ``max - min`` inside the mask (as for
    ``psnr``). NaN when that range is 0, when no mask voxel lies away from the border, or
    when every axis is shorter than 3 voxels.
    """
    inside = np.ones(np.shape(truth), bool) if mask is None else _counted(mask)
    value_range = _data_range(np.asarray(truth)[inside], data_range)
    if not inside.any() or not value_range > 0:
        return math.nan
    local = ssim_map(prediction, truth, value_range)[inside]
    local = local[~np.isnan(local)]
    return float(np.mean(local)) if local.size else math.nan


# ---- classification ----

def accuracy(prediction, truth) -> float:
    """Fraction of equal labels: 1.0 or 0.0 for one subject's class."""
    prediction, truth = np.ravel(prediction), np.ravel(truth)
    if prediction.shape != truth.shape:
        raise DataError(f"The predicted and true labels differ in shape: {prediction.shape} "
                        f"and {truth.shape}.")
    return float(np.mean(prediction == truth)) if truth.size else math.nan


# ---- one subject, one task ----

def _counted(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask, np.float64) > 0.5


def _spatial(array: np.ndarray, name: str, channels_allowed: bool) -> np.ndarray:
    """Drop a trailing channel axis of size 1 from a 4D (X, Y, Z, C) volume."""
    array = np.asarray(array)
    if array.ndim == 4 and (array.shape[-1] == 1 or not channels_allowed):
        if array.shape[-1] != 1:
            raise DataError(f"Invalid `{name}`: expected one channel (a label map). "
                            f"Received shape {array.shape}.")
        array = array[..., 0]
    return array


def segmentation_metrics(prediction, truth, *, mask=None,
                         spacing: Sequence[float] | None = None,
                         num_classes: int | None = None) -> dict[str, float]:
    """One subject's label maps: ``dice_<c>`` and ``hd95_<c>`` (mm) for each foreground
    class ``c`` in ``1 .. num_classes - 1`` (by default up to the largest label present),
    and their means over the classes with a value, ``dice_mean`` and ``hd95_mean``."""
    prediction, truth, inside = _one_grid(prediction, truth, mask, channels_allowed=False)
    if spacing is None or len(spacing) != truth.ndim or not all(s > 0 for s in spacing):
        raise DataError(f"Invalid value for argument `spacing`. Expected {truth.ndim} voxel "
                        f"sizes in mm (> 0), one per spatial axis. Received spacing={spacing!r}.")
    prediction, truth = prediction.astype(np.int64), truth.astype(np.int64)
    if inside is not None:
        prediction, truth = np.where(inside, prediction, 0), np.where(inside, truth, 0)
    if num_classes is None:
        num_classes = int(max(prediction.max(initial=0), truth.max(initial=0))) + 1
    result = {}
    for c in range(1, num_classes):
        result[f"dice_{c}"] = dice_score(prediction == c, truth == c)
        result[f"hd95_{c}"] = surface_hausdorff_distance(prediction == c, truth == c, spacing)
    for name in ("dice", "hd95"):
        values = [v for k, v in result.items() if k.startswith(f"{name}_") and not math.isnan(v)]
        result[f"{name}_mean"] = float(np.mean(values)) if values else math.nan
    return result


def regression_metrics(prediction, truth, *, mask=None,
                       data_range: float | None = None) -> dict[str, float]:
    """One subject's values: on images ``mae``, ``rmse``, ``psnr`` (dB) and ``ssim`` in
    the target's units, over the masked voxels (a 4D ``(X, Y, Z, C)`` volume pools its
    channels for MAE, RMSE and PSNR and averages the SSIM of each channel, one data range
    for all); on per-subject values (at most one axis) ``mae`` and ``rmse``."""
    prediction, truth, inside = _one_grid(prediction, truth, mask, channels_allowed=True)
    prediction, truth = prediction.astype(np.float64), truth.astype(np.float64)
    if truth.ndim <= 1:
        return {"mae": mean_absolute_error(prediction, truth),
                "rmse": root_mean_squared_error(prediction, truth)}
    channels = truth.shape[-1] if truth.ndim == 4 else 0
    if inside is None:
        inside = np.ones(truth.shape[:3] if channels else truth.shape, bool)
    p, t = prediction[inside], truth[inside]
    value_range = _data_range(t, data_range)
    if channels:
        structural = np.mean([ssim(prediction[..., c], truth[..., c], inside, value_range)
                              for c in range(channels)])
    else:
        structural = ssim(prediction, truth, inside, value_range)
    return {"mae": mean_absolute_error(p, t), "rmse": root_mean_squared_error(p, t),
            "psnr": psnr(p, t, value_range), "ssim": float(structural)}


def classification_metrics(prediction, truth) -> dict[str, float]:
    """One subject's class: ``accuracy`` (1.0 or 0.0)."""
    return {"accuracy": accuracy(prediction, truth)}


def _one_grid(prediction, truth, mask, channels_allowed: bool):
    """The volumes (and the mask, as booleans) checked to share one grid."""
    prediction = _spatial(prediction, "prediction", channels_allowed)
    truth = _spatial(truth, "truth", channels_allowed)
    if prediction.shape != truth.shape:
        raise DataError(f"The prediction and the truth differ in shape: {prediction.shape} "
                        f"and {truth.shape}. Evaluate them on one grid.")
    inside = None
    if mask is not None:
        inside = _spatial(_counted(mask), "mask", channels_allowed=False)
        spatial_shape = truth.shape[:3] if truth.ndim == 4 else truth.shape
        if inside.shape != spatial_shape:
            raise DataError(f"The mask's shape {inside.shape} differs from the volumes' "
                            f"spatial shape {spatial_shape}.")
    return prediction, truth, inside


# ---- tables ----

def metric_columns(rows: Sequence[Mapping]) -> list[str]:
    """``subject``, ``task``, then every metric in order of first appearance."""
    columns = ["subject", "task"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Per task and metric: ``n`` (values that are not NaN), ``mean``, ``std`` (sample,
    ``ddof=1``; NaN for one value) and ``median``."""
    summary = []
    for task in dict.fromkeys(row["task"] for row in rows):
        task_rows = [row for row in rows if row["task"] == task]
        for metric in metric_columns(task_rows)[2:]:
            values = np.array([row[metric] for row in task_rows if metric in row], np.float64)
            values = values[~np.isnan(values)]
            n = len(values)
            summary.append({
                "task": task, "metric": metric, "n": n,
                "mean": float(np.mean(values)) if n else math.nan,
                "std": float(np.std(values, ddof=1)) if n > 1 else math.nan,
                "median": float(np.median(values)) if n else math.nan})
    return summary


def summary_table(rows: Sequence[Mapping]) -> str:
    """The summary as an aligned text table, one line per task and metric."""
    header = ["task", "metric", "n", "mean", "std", "median"]
    lines = [[s["task"], s["metric"], str(s["n"])]
             + [f"{s[k]:.4g}" for k in ("mean", "std", "median")] for s in summarise(rows)]
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
                     for line in [header] + lines) + "\n"


def write_metrics(rows: Sequence[Mapping], csv_path: str | os.PathLike,
                  summary_path: str | os.PathLike | None = None) -> None:
    """The CSV (one row per subject and task, a metric a task lacks left empty, floats at
    full precision, NaN as ``nan``) and optionally the summary table, each atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=metric_columns(rows), restval="",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()}
                     for row in rows)
    atomic_write_text(csv_path, buffer.getvalue())
    if summary_path is not None:
        atomic_write_text(summary_path, summary_table(rows))
