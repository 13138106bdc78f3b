"""Geometry of voxel grids: spacing, orientation, same-space checks, reorientation.

A grid is a spatial shape ``(X, Y, Z)`` and a 4x4 affine from voxel indices to RAS+
millimetres (nibabel's convention). Two grids are "the same space" when they have the
same shape and their voxel centres land on the same points in the world, up to a
tolerance: header round-off (NIfTI stores float32, MetaImage writes text) must not make
two co-registered files disagree, so the tolerance is a fraction of a voxel, measured at
the corners of the grid where a small rotation error is largest.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from nibabel import orientations

from sfg_app.errors import ConfigError

DEFAULT_SPACE_TOLERANCE = 0.01  # in voxels of the finer grid
_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


def affine_problem(affine: np.ndarray) -> str | None:
    """Why ``affine`` cannot map voxel indices to the world, or None.

    A usable affine is finite, ends in the row (0, 0, 0, 1), and its 3x3 part has three
    independent columns (no zero or repeated voxel axis): otherwise orientation, spacing
    and resampling are undefined. Columns are compared after scaling to unit length, so
    that anisotropic voxels (0.1 x 0.1 x 5 mm) are not mistaken for a singular grid.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        return "it is not a finite 4x4 matrix"
    if not np.allclose(affine[3], (0, 0, 0, 1)):
        return f"its last row is {affine[3].tolist()}, not [0, 0, 0, 1]"
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(lengths <= 0):
        axes = ", ".join("ijk"[i] for i in np.flatnonzero(lengths <= 0))
        return f"voxel axis {axes} has zero length (a voxel size of 0)"
    if abs(np.linalg.det(affine[:3, :3] / lengths)) < 1e-6:
        return "its voxel axes are not independent (the 3x3 part is singular)"
    return None


def spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each of the three voxel axes."""
    return np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))


def axcodes(affine: np.ndarray) -> tuple[str, str, str]:
    """The world direction (R/L, A/P, S/I) that each voxel axis points to, e.g. ('R','A','S')."""
    return tuple(orientations.aff2axcodes(affine))


def standardize_axcodes(value: Sequence[str], name: str = "axcodes") -> tuple[str, str, str]:
    """Three letters, one from each of L/R, A/P and S/I, upper case; ConfigError otherwise."""
    letters = tuple(str(letter).strip().upper() for letter in value)
    pairs = sorted(i for letter in letters for i, pair in enumerate(_AXIS_PAIRS) if letter in pair)
    if len(letters) != 3 or pairs != [0, 1, 2]:
        raise ConfigError(
            f"Invalid value for argument `{name}`. Expected three letters naming where each "
            "voxel axis points, one from each of L/R, A/P and S/I, e.g. ('R', 'A', 'S'). "
            f"Received {name}={tuple(value)!r}.")
    return letters


def grid_corners(shape: Sequence[int]) -> np.ndarray:
    """The 8 corner voxel centres of a grid as homogeneous columns (4, 8)."""
    ends = [(0, max(int(n) - 1, 0)) for n in shape[:3]]
    corners = np.array(list(itertools.product(*ends)), dtype=np.float64).T
    return np.vstack([corners, np.ones((1, corners.shape[1]))])


def space_difference(shape_a: Sequence[int], affine_a: np.ndarray,
                     shape_b: Sequence[int], affine_b: np.ndarray,
                     tolerance: float = DEFAULT_SPACE_TOLERANCE) -> str | None:
    """None when two grids are the same space; otherwise how they differ, in words.

    ``tolerance`` is in voxels of the finer grid: the corners of the two grids may be that
    far apart in the world and still count as the same.
    """
    shape_a, shape_b = tuple(int(n) for n in shape_a[:3]), tuple(int(n) for n in shape_b[:3])
    if shape_a != shape_b:
        return f"the shapes differ: {shape_a} and {shape_b}"
    affine_a, affine_b = np.asarray(affine_a, float), np.asarray(affine_b, float)
    corners = grid_corners(shape_a)
    distance = np.max(np.linalg.norm((affine_a @ corners - affine_b @ corners)[:3], axis=0))
    limit = tolerance * float(min(spacing(affine_a).min(), spacing(affine_b).min()))
    if distance <= limit:
        return None
    details = []
    if axcodes(affine_a) != axcodes(affine_b):
        details.append(f"orientation {''.join(axcodes(affine_a))} and "
                       f"{''.join(axcodes(affine_b))}")
    spacing_a, spacing_b = spacing(affine_a), spacing(affine_b)
    if not np.allclose(spacing_a, spacing_b, rtol=0, atol=limit):
        details.append(f"spacing {_fmt(spacing_a)} and {_fmt(spacing_b)} mm")
    if not np.allclose(affine_a[:3, 3], affine_b[:3, 3], rtol=0, atol=limit):
        details.append(f"origin {_fmt(affine_a[:3, 3])} and {_fmt(affine_b[:3, 3])} mm")
    summary = f"the grids are {distance:.4g} mm apart at a corner (tolerance {limit:.3g} mm)"
    return summary + (": " + "; ".join(details) if details else "")


def same_space(shape_a, affine_a, shape_b, affine_b,
               tolerance: float = DEFAULT_SPACE_TOLERANCE) -> bool:
    """Whether two grids have the same shape and voxel positions (see ``space_difference``)."""
    return space_difference(shape_a, affine_a, shape_b, affine_b, tolerance) is None


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# Reorientation: an "ornt" is nibabel's (3, 2) array; row i = [output axis, flip (+1/-1)]
# for input axis i. Only flips and axis permutations: no interpolation, exactly undone.

def orientation_to(affine: np.ndarray, target_axcodes: Sequence[str]) -> np.ndarray:
    """The flips and permutation taking a grid with ``affine`` to ``target_axcodes``.

    Oblique grids go to the closest axis-aligned orientation (nibabel's io_orientation).
    """
    return orientations.ornt_transform(orientations.io_orientation(affine),
                                       orientations.axcodes2ornt(tuple(target_axcodes)))


def invert_orientation(ornt: np.ndarray) -> np.ndarray:
    """The transform that undoes ``ornt``."""
    inverse = np.empty_like(np.asarray(ornt, dtype=np.float64))
    for axis, (destination, flip) in enumerate(np.asarray(ornt)):
        inverse[int(destination)] = (axis, flip)
    return inverse


def is_identity_orientation(ornt: np.ndarray) -> bool:
    return bool(np.array_equal(np.asarray(ornt), [[0, 1], [1, 1], [2, 1]]))


def reorient_array(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """``array`` (spatial axes first) flipped and permuted by ``ornt``; trailing axes kept."""
    return orientations.apply_orientation(array, ornt)


def reoriented_shape(shape: Sequence[int], ornt: np.ndarray) -> tuple[int, int, int]:
    new_shape = [0, 0, 0]
    for axis, (destination, _) in enumerate(np.asarray(ornt)):
        new_shape[int(destination)] = int(shape[axis])
    return tuple(new_shape)


def reoriented_affine(affine: np.ndarray, shape: Sequence[int], ornt: np.ndarray) -> np.ndarray:
    """The affine of the reoriented grid: the same voxels, the same world positions."""
    return np.asarray(affine, np.float64) @ orientations.inv_ornt_aff(ornt, tuple(shape[:3]))


def resampling_scale(affine: np.ndarray, shape: Sequence[int],
                     pixdim: Sequence[float]) -> np.ndarray:
    """New voxel size over old, per axis. Axes of one voxel (the Z of a 2D image) keep
    theirs, and a ratio within 1e-6 of 1 (header round-off) counts as 1: no resampling."""
    scale = np.asarray(pixdim, dtype=np.float64) / spacing(affine)
    scale[np.asarray(shape[:3]) == 1] = 1.0
    scale[np.abs(scale - 1.0) < 1e-6] = 1.0
    return scale


def resampled_grid(affine: np.ndarray, shape: Sequence[int],
                   pixdim: Sequence[float]) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """The grid with voxel size ``pixdim`` covering the same field of view:
    ``(affine, shape, scale)``, with ``scale`` from ``resampling_scale``.

    The outer edges of the field of view stay in place (not the first voxel centre), so
    the grid is symmetric and resampling back and forth does not drift; new voxel ``v``
    lies at old voxel ``scale * v + (scale - 1) / 2``.
    """
    scale = resampling_scale(affine, shape, pixdim)
    new_shape = tuple(max(1, int(round(int(n) / s))) for n, s in zip(shape[:3], scale))
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = 0.5 * scale - 0.5
    return np.asarray(affine, np.float64) @ step, new_shape, scale
