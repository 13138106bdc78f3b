"""What every window sampler shares: argument checks, subject checks, window arithmetic.

Vocabulary (one for the whole data engine): a volume is an ``(X, Y, Z, C)`` array, a 2D
image has ``Z = 1``; ``spatial_window_size`` always has three values; a window's location
is ``[x0, y0, z0, x1, y1, z1]``, start inclusive, end exclusive, in voxels of the volume it
was cut from. A location may reach past the volume (a volume smaller than the window, a
grid window at the border): the voxels outside read as zero, never an error.

A sampler checks its arguments once, checks a subject once in :meth:`WindowSampler.prepare`
(every volume 4-D, all of one spatial shape) and hands the checked subject to the one
method a sampler changes, ``_plan``; the plan it returns draws locations cheaply as often as
needed, so nothing per subject is recomputed per window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from sfg_app.arguments import invalid
from sfg_app.errors import ConfigError, DataError

Subject = Mapping[str, np.ndarray]

# Window dictionaries use these keys beside the section names.
RESERVED_KEYS = ("available", "location", "subject")


def standardize_window_size(value, name: str = "spatial_window_size") -> tuple[int, int, int]:
    """Three strictly positive ints, or a ConfigError that names ``name``."""
    values = _int_triple(value, name, "three strictly positive integers, e.g. (64, 64, 1) "
                         "for 2D images or (96, 96, 96) for 3D volumes")
    if min(values) < 1:
        raise invalid(name, tuple(value), "three strictly positive integers")
    return values


def standardize_border(value, window_size: Sequence[int], name: str = "border"
                       ) -> tuple[int, int, int]:
    """Three non-negative ints, each under half its window side, so that windows advance."""
    values = _int_triple(value, name, "three non-negative integers, e.g. (8, 8, 0)")
    for axis, (border, side) in enumerate(zip(values, window_size)):
        if border < 0 or 2 * border >= side:
            largest = max((side - 1) // 2, 0)
            raise ConfigError(
                f"Invalid value for argument `{name}`. Expected 0 <= border < window / 2 on "
                f"every axis (the overlap of neighbouring windows is 2 * border). Received "
                f"{name}={tuple(values)} for spatial_window_size={tuple(window_size)}: axis "
                f"{axis} allows at most {largest}.")
    return values


def _int_triple(value, name: str, expected: str) -> tuple[int, int, int]:
    try:
        values = tuple(value)
    except TypeError:  # a single number, None
        values = None
    if (values is None or len(values) != 3 or
            not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                    for v in values)):
        raise invalid(name, value, expected)
    return tuple(int(v) for v in values)


def spatial_shape(subject: Subject) -> tuple[int, int, int]:
    """The common ``(X, Y, Z)`` of a subject's volumes; DataError when they disagree.

    Arrays of one dimension are per-subject values (image-level targets) and are skipped.
    """
    shapes = {}
    for name, array in subject.items():
        if array.ndim == 1:
            continue
        if array.ndim != 4:
            raise DataError(
                f"Section {name!r} has an array of shape {array.shape}. Expected a volume "
                "(X, Y, Z, C) with channels last (Z = 1 for 2D images) or a vector (C,) "
                "of per-subject values.")
        shapes[name] = array.shape[:3]
    if not shapes:
        raise DataError(f"The subject has no volume among the sections {sorted(subject)}: "
                        "nothing to cut windows from.")
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in shapes.items())
        raise DataError(f"The sections of a subject must share one spatial shape after "
                        f"preprocessing. Received {listed}. Resample them onto one grid "
                        "(pixdim, axcodes) or pad them alike.")
    return next(iter(shapes.values()))


def start_range(shape: Sequence[int], window_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest start per axis of a window kept inside the volume; where the
    volume is smaller than the window, the one start that centres the volume in it."""
    shape, window = np.asarray(shape), np.asarray(window_size)
    fits = shape >= window
    low = np.where(fits, 0, (shape - window) // 2)
    high = np.where(fits, shape - window, low)
    return low, high


def locations_from_starts(starts: np.ndarray, window_size: Sequence[int]) -> np.ndarray:
    starts = np.asarray(starts, dtype=np.int64).reshape(-1, 3)
    return np.concatenate([starts, starts + np.asarray(window_size)], axis=1)


def crop(array: np.ndarray, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
    """``array[x0:x1, y0:y1, z0:z1]`` as a new array, zero where the box leaves the volume."""
    start, stop = np.asarray(start, np.int64), np.asarray(stop, np.int64)
    if _inside(array, start, stop):
        return np.array(array[tuple(slice(a, b) for a, b in zip(start, stop))])
    return _padded_box(array, start, stop)


def crop_view(array: np.ndarray, start: Sequence[int], stop: Sequence[int]
              ) -> tuple[np.ndarray, np.ndarray]:
    """The box as ``(source, offset)``: ``source[offset + i]`` is voxel ``i`` of the box.

    Inside the volume that is the volume itself (nothing copied, so a transform reads
    only the voxels it needs); a box that leaves the volume becomes a zero-padded copy.
    """
    start, stop = np.asarray(start, np.int64), np.asarray(stop, np.int64)
    if _inside(array, start, stop):
        return array, start
    return _padded_box(array, start, stop), np.zeros(3, np.int64)


def _inside(array, start, stop) -> bool:
    return bool(np.all(start >= 0) and np.all(stop <= array.shape[:3]))


def _padded_box(array, start, stop):
    box = np.zeros(tuple(int(v) for v in stop - start) + array.shape[3:], dtype=array.dtype)
    src, dst = [], []
    for a, b, size in zip(start, stop, array.shape[:3]):
        lo, hi = max(int(a), 0), min(int(b), size)
        if hi <= lo:
            return box
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(a), hi - int(a)))
    box[tuple(dst)] = array[tuple(src)]
    return box


class SamplingPlan:
    """Where one subject's windows come from; draws starts uniformly inside the volume."""

    def __init__(self, arrays: Subject, shape: Sequence[int], window_size: Sequence[int]):
        self.arrays = arrays
        self.shape = tuple(shape)
        self.window_size = tuple(window_size)

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` locations, shape ``(count, 6)``."""
        low, high = start_range(self.shape, self.window_size)
        return locations_from_starts(rng.integers(low, high + 1, size=(count, 3)),
                                     self.window_size)


class WindowSampler:
    """Base of the training samplers: arguments and subjects checked once, then ``_plan``.

    Every sampler takes the same arguments so that the application can build any of them
    from the registry by name: ``sampling_map`` is the section a map-driven sampler reads
    (ignored by the others), ``label_sections`` the sections resampled with nearest
    neighbour by samplers that interpolate.
    """

    needs_sampling_map = False

    def __init__(self, spatial_window_size: Sequence[int], *, sampling_map: str | None = None,
                 label_sections: Sequence[str] = ()):
        self.window_size = standardize_window_size(spatial_window_size)
        if self.needs_sampling_map and not sampling_map:
            raise ConfigError(
                f"Invalid value for argument `sampling_map`. {type(self).__name__} draws "
                "windows from a map: expected the name of the section that holds it. "
                f"Received sampling_map={sampling_map!r}.")
        self.sampling_map = sampling_map
        self.label_sections = tuple(label_sections)

    def prepare(self, subject: Subject) -> SamplingPlan:
        """Checks the subject and returns what draws its windows."""
        return self._plan(subject, spatial_shape(subject))

    def locations(self, subject: Subject, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` window locations for one subject (prepares it each call)."""
        return self.prepare(subject).draw(count, rng)

    def _plan(self, subject: Subject, shape: tuple[int, int, int]) -> SamplingPlan:
        raise NotImplementedError


class MapSampler(WindowSampler):
    """Draws a voxel with probability proportional to a map, then a window containing it.

    The window is centred on the drawn voxel unless that would take it out of the volume;
    then it is moved inside, so it still contains the voxel. Sampling is in two stages
    (an 8^3 block in proportion to the block's sum, then a voxel of that block in
    proportion to its value), which is exactly proportional to the map while a subject's
    plan keeps only the block sums (a few kB), not a map or index list per voxel.
    A subclass changes one method, :meth:`probability_map`.
    """

    needs_sampling_map = True
    block = 8

    def probability_map(self, subject: Subject, shape: tuple[int, int, int]):
        """A function ``box (tuple of 3 slices) -> float64 weights of the voxels in box``:
        the unnormalised probability map, evaluated lazily on a part of the volume."""
        raise NotImplementedError

    def _plan(self, subject, shape):
        weights = self.probability_map(subject, shape)
        blocks = tuple(-(-s // self.block) for s in shape)
        sums = np.zeros(blocks, np.float64)
        for bx in range(blocks[0]):  # one slab of blocks at a time bounds the memory
            x = slice(bx * self.block, min((bx + 1) * self.block, shape[0]))
            slab = weights((x, slice(None), slice(None)))
            self._check_weights(slab)
            padded = np.zeros((self.block,) + tuple(b * self.block for b in blocks[1:]))
            padded[:slab.shape[0], :shape[1], :shape[2]] = slab
            sums[bx] = padded.reshape(self.block, blocks[1], self.block, blocks[2],
                                      self.block).sum(axis=(0, 2, 4))
        total = sums.sum()
        if not total > 0:
            raise DataError(f"The sampling map {self.sampling_map!r} is zero everywhere: "
                            f"{type(self).__name__} has no voxel to draw a window around. "
                            "Use a map with at least one positive voxel, or "
                            "window_sampling = uniform.")
        return MapPlan(subject, shape, self.window_size, np.cumsum(sums.ravel()), blocks,
                       self.block, weights)

    def map_volume(self, subject: Subject) -> np.ndarray:
        """The sampling map section as ``(X, Y, Z)``; DataError unless one channel."""
        if self.sampling_map not in subject:
            raise DataError(f"The sampling map section {self.sampling_map!r} is missing from "
                            f"the subject (it has {sorted(subject)}). Add the section or fix "
                            "`sampling_map`.")
        array = subject[self.sampling_map]
        if array.ndim != 4 or array.shape[3] != 1:
            raise DataError(f"The sampling map section {self.sampling_map!r} must be a "
                            f"volume with one channel (X, Y, Z, 1). Received shape "
                            f"{array.shape}.")
        return array[..., 0]

    def _check_weights(self, values: np.ndarray) -> None:
        if not np.all(np.isfinite(values)) or values.min(initial=0.0) < 0:
            bad = values[~np.isfinite(values) | (values < 0)]
            raise DataError(f"The sampling map {self.sampling_map!r} must be finite and "
                            f"non-negative. Received values such as {bad[:3].tolist()}. "
                            "Clip or rescale the map.")


class MapPlan(SamplingPlan):
    """Block sums of one subject's probability map, and the map to look inside a block."""

    def __init__(self, arrays, shape, window_size, cumulative, blocks, block, weights):
        super().__init__(arrays, shape, window_size)
        self.cumulative = cumulative
        self.blocks = blocks
        self.block = block
        self.weights = weights

    def draw(self, count, rng):
        starts = np.empty((count, 3), np.int64)
        picks = np.searchsorted(self.cumulative, rng.random(count) * self.cumulative[-1],
                                side="right")
        half = np.asarray(self.window_size) // 2
        low, high = start_range(self.shape, self.window_size)
        for row, pick in enumerate(np.minimum(picks, self.cumulative.size - 1)):
            corner = np.array(np.unravel_index(pick, self.blocks)) * self.block
            box = tuple(slice(c, min(c + self.block, s)) for c, s in zip(corner, self.shape))
            values = np.cumsum(self.weights(box).ravel())
            index = np.searchsorted(values, rng.random() * values[-1], side="right")
            inside = np.unravel_index(min(index, values.size - 1),
                                      tuple(b.stop - b.start for b in box))
            starts[row] = np.clip(corner + np.asarray(inside) - half, low, high)
        return locations_from_starts(starts, self.window_size)
