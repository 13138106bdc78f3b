"""Random spatial and intensity transforms of training windows, driven by a Generator.

Spatial transforms (flips, rotation, scaling, elastic deformation) are applied alike to
every section of a window, label sections with nearest neighbour and the rest linearly.
Rotation, scaling and the elastic field are composed into one map from window voxels to
volume voxels, so each array is interpolated once; and only the voxels that map needs
are read: the window's box in the volume plus the margin the drawn transform reaches,
zero outside the volume. Flips are exact: array reversals, or reflections folded into
the map when the window is interpolated anyway. Intensity transforms (bias field, gamma,
noise) touch image sections only. Everything is float32 and numpy only; the hot loops
allocate nothing and call no BLAS (see ``SpatialAugmentation.apply``).

Units: angles in degrees, scaling in percent (10 -> a factor 1.1, the content looks
10 % larger), ``deformation_sigma`` and the elastic displacements in voxels of the
preprocessed grid (multiply by ``pixdim`` for millimetres), intensities in the units of
the preprocessed (normalised) images. A window of ``Z = 1`` (2D) is rotated, scaled and
deformed in its plane only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sfg_app.data.samplers.base import crop, crop_view
from sfg_app.arguments import invalid
from sfg_app.errors import ConfigError

# Output voxels per interpolation step: temporaries small enough for the cache, steps
# few enough that Python between them (holding the GIL) stays a small share (measured).
_CHUNK = 32768


def _pair(value, name: str, low: float | None = None,
          low_inclusive: bool = False) -> tuple[float, float] | None:
    """A ``(low, high)`` range or None (transform off); both ends above ``low`` (at
    least ``low`` with ``low_inclusive``)."""
    if value is None or (isinstance(value, (tuple, list)) and len(value) == 0):
        return None
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or pair[0] > pair[1] or not all(np.isfinite(pair)) or (
            low is not None and (pair[0] < low if low_inclusive else pair[0] <= low)):
        bound = (f" {'at least' if low_inclusive else 'above'} {low:g}"
                 if low is not None else "")
        raise invalid(name, value, f"a range (low, high) with low <= high{bound}, or () to "
                                   "switch it off")
    return pair


def _number(value, name: str, low: float, high: float = np.inf, integer: bool = False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not low <= value <= high or (integer and int(value) != value):
        kind = "an integer" if integer else "a number"
        upper = f" and <= {high:g}" if np.isfinite(high) else ""
        raise invalid(name, value, f"{kind} >= {low:g}{upper}")
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class SpatialDraw:
    """One window's spatial transform: output voxel ``p`` reads the source at
    ``c + matrix @ (p - c) + displacement(p)`` (``c`` the window centre, relative to the
    window's start), then the axes in ``flips`` are reversed. When the window is
    interpolated anyway, flips are folded into ``matrix`` and ``elastic`` instead."""

    window_size: tuple[int, int, int]
    flips: tuple[int, ...]
    matrix: np.ndarray | None
    elastic: np.ndarray | None  # B-spline coefficients (nx, ny, nz, 3), voxels

    @property
    def interpolates(self) -> bool:
        return self.matrix is not None or self.elastic is not None

    def active_axes(self) -> tuple[int, ...]:
        """Axes along which source coordinates are not whole voxels."""
        matrix = np.eye(3) if self.matrix is None else self.matrix
        moves = np.zeros(3, bool) if self.elastic is None else np.any(self.elastic != 0,
                                                                      axis=(0, 1, 2))
        return tuple(a for a in range(3) if moves[a] or np.any(matrix[a] != np.eye(3)[a]))

    def source_box(self, start: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The volume voxels ``[lo, hi)`` that a window starting at ``start`` reads."""
        window = np.asarray(self.window_size)
        centre = (window - 1) / 2
        matrix = np.eye(3) if self.matrix is None else self.matrix
        reach = np.abs(matrix) @ centre
        if self.elastic is not None:  # B-spline weights are a partition of unity
            reach = reach + np.abs(self.elastic).max(axis=(0, 1, 2))
        lo = np.floor(centre - reach - 1e-3).astype(np.int64)
        hi = np.floor(centre + reach + 1e-3).astype(np.int64) + 2
        still = [a for a in range(3) if a not in self.active_axes()]
        lo[still], hi[still] = 0, window[still]
        return np.asarray(start) + lo, np.asarray(start) + hi


class SpatialAugmentation:
    """Random flips, rotation, scaling and elastic deformation of a window.

    ``random_flipping_axes``: axes each reversed with ``flip_probability``.
    ``rotation_angle``: (low, high) degrees; a 3D window gets three independent angles
    about the three axes, a 2D window one angle in its plane.
    ``scaling_percentage``: (low, high), one independent factor per axis.
    ``do_elastic_deformation``: with chance ``proportion_to_deform``, a cubic B-spline
    displacement field on ``num_ctrl_points`` control points per axis spanning the window
    (plus one beyond each end), control displacements ~ N(0, ``deformation_sigma``) voxels.
    """

    def __init__(self, *, random_flipping_axes: Sequence[int] = (), flip_probability: float = 0.5,
                 rotation_angle: Sequence[float] | None = None,
                 scaling_percentage: Sequence[float] | None = None,
                 do_elastic_deformation: bool = False, num_ctrl_points: int = 4,
                 deformation_sigma: float = 15.0, proportion_to_deform: float = 0.5):
        axes = tuple(random_flipping_axes or ())
        if not all(isinstance(a, (int, np.integer)) and 0 <= a <= 2 for a in axes):
            raise invalid("random_flipping_axes", random_flipping_axes,
                          "spatial axes among 0, 1, 2")
        self.flip_axes = tuple(sorted(set(int(a) for a in axes)))
        self.flip_probability = _number(flip_probability, "flip_probability", 0, 1)
        self.rotation = _pair(rotation_angle, "rotation_angle")
        self.scaling = _pair(scaling_percentage, "scaling_percentage", low=-100)
        self.elastic = bool(do_elastic_deformation)
        self.num_ctrl_points = _number(num_ctrl_points, "num_ctrl_points", 2, integer=True)
        self.sigma = _number(deformation_sigma, "deformation_sigma", 0)
        self.proportion = _number(proportion_to_deform, "proportion_to_deform", 0, 1)
        self._grids: dict[tuple, np.ndarray] = {}

    def __getstate__(self):  # the coordinate grids are rebuilt, not sent to workers
        return {**self.__dict__, "_grids": {}}

    def draw(self, rng: np.random.Generator, window_size: Sequence[int]) -> SpatialDraw:
        window = tuple(int(w) for w in window_size)
        planar = window[2] == 1
        flips = tuple(a for a in self.flip_axes
                      if rng.random() < self.flip_probability and window[a] > 1)
        matrix = None
        if self.rotation is not None:
            angles = np.deg2rad(rng.uniform(*self.rotation, size=1 if planar else 3))
            matrix = rotation_matrix(angles)
        if self.scaling is not None:
            factors = 1 + rng.uniform(*self.scaling, size=3) / 100
            if planar:
                factors[2] = 1
            matrix = (np.eye(3) if matrix is None else matrix) @ np.diag(1 / factors)
        elastic = None
        if self.elastic and self.sigma > 0 and rng.random() < self.proportion:
            counts = [self.num_ctrl_points + 2 if w > 1 else 1 for w in window]
            elastic = rng.normal(0, self.sigma, size=(*counts, 3))
            elastic[..., [w == 1 for w in window]] = 0
        if matrix is not None or elastic is not None:  # a reflection costs no extra copy
            for axis in flips:
                matrix = (np.eye(3) if matrix is None else matrix) * np.where(
                    np.arange(3) == axis, -1, 1)
                elastic = None if elastic is None else np.flip(elastic, axis)
            flips = ()
        return SpatialDraw(window, flips, matrix, elastic)

    def apply(self, draw: SpatialDraw, sources: Mapping[str, tuple[np.ndarray, np.ndarray]],
              shift: np.ndarray, nearest: Collection[str]) -> dict[str, np.ndarray]:
        """Resamples each ``(array, offset)`` source: window voxel ``p`` reads
        ``array[offset + shift + source(p)]``; ``nearest`` names the label sections.

        The window is done a few planes at a time into buffers made once per window:
        no array is allocated inside the loop. (Measured: once TensorFlow runs, glibc
        gives every large temporary freed by a worker thread back to the system, and
        faulting it in again doubled the time of a window.)"""
        window = draw.window_size
        count, plane = int(np.prod(window)), window[1] * window[2]
        step = max(1, _CHUNK // plane) * plane
        grid = self._grid(window)
        matrix = (np.eye(3) if draw.matrix is None else draw.matrix).astype(np.float32)
        active = draw.active_axes()
        field = None if draw.elastic is None else _partial_field(draw.elastic, window, step)
        flats, outs = {}, {}
        for name, (array, _) in sources.items():
            flat = np.ascontiguousarray(array).reshape(-1, array.shape[3])
            if name not in nearest and flat.dtype != np.float32:
                flat = flat.astype(np.float32)
            flats[name] = flat
            outs[name] = np.empty((count, flat.shape[1]), flat.dtype)
        # Sources share one shape (a subject's sections do), hence offsets and strides.
        array, offset = next(iter(sources.values()))
        origin = (offset + shift + (np.asarray(window) - 1) / 2).astype(np.float32)[:, None]
        strides = (array.shape[1] * array.shape[2], array.shape[2], 1)
        coords, floor, frac = (np.empty((3, step), np.float32) for _ in range(3))
        index = np.empty((3, step), np.intp)
        base, near, term = (np.empty(step, np.intp) for _ in range(3))
        scratch = {flat.shape[1]: [np.empty((step, flat.shape[1]), np.float32) for _ in active]
                   for name, flat in flats.items() if name not in nearest}  # by channels
        for first in range(0, count, step):
            size = min(step, count - first)
            part = slice(first, first + size)
            at, fl, fr, ix = coords[:, :size], floor[:, :size], frac[:, :size], index[:, :size]
            bs, nr, tm = base[:size], near[:size], term[:size]
            np.einsum("ij,jn->in", matrix, grid[:, part], out=at)
            at += origin
            if field is not None:
                at += field(first // plane, size // plane)
            np.floor(at, out=fl)
            np.subtract(at, fl, out=fr)
            np.copyto(ix, fl, casting="unsafe")
            np.multiply(ix[0], strides[0], out=bs)
            np.multiply(ix[1], strides[1], out=tm)
            bs += tm
            bs += ix[2]
            for name, flat in flats.items():
                if name in nearest:
                    nr[...] = bs
                    for a in active:
                        np.multiply(fr[a] >= 0.5, strides[a], out=tm)
                        nr += tm
                    np.take(flat, nr, axis=0, out=outs[name][part], mode="clip")
                else:
                    _linear(flat, bs, fr, active, strides,
                            [b[:size] for b in scratch[flat.shape[1]]], outs[name][part])
        return {name: _flip(out.reshape(*window, -1), draw.flips)
                for name, out in outs.items()}

    def _grid(self, window: tuple[int, int, int]) -> np.ndarray:
        """Window voxel coordinates relative to the centre, ``(3, X*Y*Z)`` float32."""
        if window not in self._grids:
            axes = [np.arange(w, dtype=np.float32) - np.float32((w - 1) / 2) for w in window]
            self._grids[window] = np.stack(
                [g.ravel() for g in np.meshgrid(*axes, indexing="ij")])
        return self._grids[window]


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix (angles in radians): one angle turns axes 0 and 1; three are about
    axes 0, 1, 2, applied in that order."""
    matrix = np.eye(3)
    planes = [(0, 1)] if angles.size == 1 else [(1, 2), (2, 0), (0, 1)]
    for angle, (i, j) in zip(angles, planes):
        turn = np.eye(3)
        turn[i, i] = turn[j, j] = np.cos(angle)
        turn[i, j], turn[j, i] = -np.sin(angle), np.sin(angle)
        matrix = turn @ matrix
    return matrix


def _bspline_basis(length: int, coefficients: int) -> np.ndarray:
    """``(length, coefficients)`` cubic B-spline weights: knots spaced evenly so that the
    inner ``coefficients - 2`` span the axis, one more beyond each end."""
    if coefficients == 1:
        return np.ones((length, 1))
    spacing = (length - 1) / (coefficients - 3)
    t = np.abs(np.arange(length)[:, None] / spacing - (np.arange(coefficients) - 1))
    return np.where(t < 1, 2 / 3 - t ** 2 + t ** 3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0))


def _partial_field(coefficients: np.ndarray, window: tuple[int, int, int], step: int):
    """The displacement of the window as a function ``(first plane, planes) -> (3, n)``:
    the y and z sums are done once, the x sum per call (into one reused buffer)."""
    bx, by, bz = (_bspline_basis(w, n).astype(np.float32)
                  for w, n in zip(window, coefficients.shape[:3]))
    yz = _contract_yz(by, bz, coefficients.astype(np.float32))
    buffer = np.empty((step // (window[1] * window[2]), yz.shape[1]), np.float32)

    def field(first: int, planes: int) -> np.ndarray:
        out = buffer[:planes]
        np.einsum("xi,in->xn", bx[first:first + planes], yz, out=out)
        return out.reshape(-1, 3).T

    return field


def _linear(flat: np.ndarray, base: np.ndarray, frac: np.ndarray, axes: Sequence[int],
            strides: Sequence[int], scratch: list[np.ndarray], out: np.ndarray,
            offset: int = 0) -> None:
    """Linear interpolation over ``axes`` into ``out`` ``(n, C)``: one pair of reads per
    axis, recursively; the reads fetch whole voxels (all channels), the blending runs one
    channel at a time (a short inner loop of C values would be three times slower)."""
    if not axes:  # indices are inside by construction of the source box: clip is a no-op
        np.take(flat[offset:], base, axis=0, out=out, mode="clip")
        return
    high = scratch[len(axes) - 1]
    _linear(flat, base, frac, axes[1:], strides, scratch, out, offset)
    _linear(flat, base, frac, axes[1:], strides, scratch, high, offset + strides[axes[0]])
    weight = frac[axes[0]]
    for channel in range(out.shape[1]):
        low_c, high_c = out[:, channel], high[:, channel]
        np.subtract(high_c, low_c, out=high_c)
        np.multiply(high_c, weight, out=high_c)
        np.add(low_c, high_c, out=low_c)


def _flip(array: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    return np.ascontiguousarray(np.flip(array, axis=tuple(axes))) if axes else array


@dataclass(frozen=True)
class IntensityDraw:
    bias: np.ndarray | None  # polynomial coefficients (order+1)^3 of the log field
    gamma: float | None
    noise_std: float
    seed: int


class IntensityAugmentation:
    """Bias field, gamma and noise for image sections.

    ``bias_field_range``: (low, high) of the coefficients of a polynomial of degree
    ``bf_order`` in window coordinates scaled to [-1, 1]; the image is multiplied by its
    exponential (a smooth multiplicative field, NiftyNet / TorchIO).
    ``gamma_range``: (low, high) of gamma, drawn log-uniformly; each channel is mapped to
    [0, 1] by its window minimum and maximum, raised to gamma, mapped back.
    ``noise_std``: standard deviation of added Gaussian noise: (low, high), drawn
    uniformly per window as `[TRAINING] noise_std` gives it, or one number (0 or None:
    no noise).
    """

    def __init__(self, *, bias_field_range: Sequence[float] | None = None, bf_order: int = 3,
                 gamma_range: Sequence[float] | None = None,
                 noise_std: float | Sequence[float] | None = None):
        self.bias = _pair(bias_field_range, "bias_field_range")
        self.order = _number(bf_order, "bf_order", 0, integer=True)
        self.gamma = _pair(gamma_range, "gamma_range", low=0)
        if noise_std is None or isinstance(noise_std, (tuple, list)):
            self.noise = _pair(noise_std, "noise_std", low=0, low_inclusive=True)
        else:
            std = _number(noise_std, "noise_std", 0)
            self.noise = (std, std) if std > 0 else None

    def draw(self, rng: np.random.Generator) -> IntensityDraw:
        bias = None
        if self.bias is not None:
            degree = np.add.outer(np.add.outer(*[np.arange(self.order + 1)] * 2),
                                  np.arange(self.order + 1))
            bias = np.where(degree <= self.order, rng.uniform(*self.bias, degree.shape), 0)
        gamma = None
        if self.gamma is not None:
            gamma = float(np.exp(rng.uniform(*np.log(self.gamma))))
        noise_std = 0.0
        if self.noise is not None:
            low, high = self.noise
            noise_std = low if low == high else float(rng.uniform(low, high))
        return IntensityDraw(bias, gamma, noise_std, int(rng.integers(2 ** 63)))

    def apply(self, draw: IntensityDraw, window: np.ndarray, stream: int = 0) -> np.ndarray:
        """The window (``(X, Y, Z, C)`` float32) transformed in place; ``stream`` tells the
        sections of one window apart, so that each gets its own noise."""
        channels = [window[..., c] for c in range(window.shape[3])]  # 1-D loops, not (C,)
        if draw.bias is not None:
            field = np.exp(_polynomial(draw.bias, window.shape[:3]))
            for channel in channels:
                channel *= field
        if draw.gamma is not None:
            spans = []
            for channel in channels:  # to [0, 1], one power for all channels, back
                low, high = channel.min(), channel.max()
                spans.append((low, max(high - low, np.finfo(np.float32).tiny)))
                channel -= low
                channel *= 1 / spans[-1][1]
            np.power(window, np.float32(draw.gamma), out=window)
            for channel, (low, span) in zip(channels, spans):
                channel *= span
                channel += low
        if draw.noise_std > 0:
            target = window if window.flags.c_contiguous else np.ascontiguousarray(window)
            _add_gaussian(np.random.Generator(np.random.SFC64([draw.seed, stream])),
                          target.reshape(-1), draw.noise_std)
            if target is not window:
                window[...] = target
        return window


def _add_gaussian(rng: np.random.Generator, values: np.ndarray, std: float) -> None:
    """``values`` (1-D float32) plus Gaussian noise, by the Box-Muller transform: exact in
    distribution (tails to 5.8 sigma, the limit of float32 uniforms) and twice as fast as
    numpy's float32 ziggurat here; a chunk at a time into reused buffers."""
    half = _CHUNK // 2
    uniform, wave = np.empty(2 * half, np.float32), np.empty(half, np.float32)
    for first in range(0, values.size, 2 * half):
        part = values[first:first + 2 * half]
        count = (part.size + 1) // 2
        rng.random(out=uniform[:2 * count], dtype=np.float32)
        radius, angle = uniform[:count], uniform[count:2 * count]
        np.subtract(1, radius, out=radius)
        np.log(radius, out=radius)
        radius *= -2
        np.sqrt(radius, out=radius)
        radius *= np.float32(std)
        angle *= np.float32(2 * np.pi)
        np.cos(angle, out=wave[:count])
        wave[:count] *= radius
        part[:count] += wave[:count]
        np.sin(angle, out=angle)
        angle *= radius
        part[count:] += angle[:part.size - count]


def _polynomial(coefficients: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``sum c[i, j, k] x^i y^j z^k`` over a window, coordinates in [-1, 1], float32."""
    powers = []
    for side in shape:
        x = (np.arange(side) - (side - 1) / 2) / max((side - 1) / 2, 1)
        powers.append((x[:, None] ** np.arange(coefficients.shape[0])).astype(np.float32))
    yz = _contract_yz(powers[1], powers[2], coefficients.astype(np.float32)[..., None])
    return np.einsum("xi,in->xn", powers[0], yz).reshape(shape)


def _contract_yz(by: np.ndarray, bz: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """``sum_jk by[y, j] bz[z, k] c[i, j, k, d]`` as ``(i, y * z * d)``, one axis at a time
    (a single three-operand einsum is a hundred times slower). einsum rather than ``@``
    throughout: BLAS would start threads that fight the window workers for the cores."""
    partial = np.einsum("zk,ijkd->ijzd", bz, coefficients)
    return np.einsum("yj,ijzd->iyzd", by, partial).reshape(coefficients.shape[0], -1)


class Augmenter:
    """Spatial and intensity augmentation of one window, sections told apart by name.

    ``image_sections`` get intensity transforms; ``label_sections`` are resampled with
    nearest neighbour; every other volume (regression targets, masks, maps) linearly.
    Per-subject values (1-D arrays) pass through unchanged.
    """

    def __init__(self, *, spatial: SpatialAugmentation | None = None,
                 intensity: IntensityAugmentation | None = None,
                 image_sections: Collection[str] = (), label_sections: Collection[str] = ()):
        self.spatial, self.intensity = spatial, intensity
        self.image_sections = frozenset(image_sections)
        self.label_sections = frozenset(label_sections)
        both = self.image_sections & self.label_sections
        if both:
            raise ConfigError(f"Sections {sorted(both)} are given both as image_sections and "
                              "as label_sections; a section is one or the other.")

    def window(self, arrays: Mapping[str, np.ndarray], location: Sequence[int],
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The augmented window at ``location`` ``[x0, y0, z0, x1, y1, z1]`` of the volumes."""
        location = np.asarray(location, np.int64)
        start, stop = location[:3], location[3:]
        window = tuple(int(v) for v in stop - start)
        spatial = self.spatial.draw(rng, window) if self.spatial else None
        intensity = self.intensity.draw(rng) if self.intensity else None
        volumes = {name: a for name, a in arrays.items() if a.ndim == 4}
        if spatial is not None and spatial.interpolates:
            low, high = spatial.source_box(start)
            sources = {name: crop_view(a, low, high) for name, a in volumes.items()}
            shift = start - low
            out = self.spatial.apply(spatial, sources, shift, self.label_sections)
        else:
            flips = spatial.flips if spatial is not None else ()
            out = {name: _flip(crop(a, start, stop), flips) for name, a in volumes.items()}
        for stream, name in enumerate(sorted(self.image_sections & set(out))):
            window_array = out[name].astype(np.float32, copy=False)
            out[name] = (self.intensity.apply(intensity, window_array, stream)
                         if intensity is not None else window_array)
        out.update({name: a for name, a in arrays.items() if a.ndim != 4})
        return out

    def __call__(self, arrays: Mapping[str, np.ndarray], rng: np.random.Generator
                 ) -> dict[str, np.ndarray]:
        """The whole volumes taken as one window and augmented (zero outside them)."""
        shape = next((a.shape[:3] for a in arrays.values() if a.ndim == 4), None)
        if shape is None:
            raise ValueError("Nothing to augment: no volume (X, Y, Z, C) among the arrays "
                             f"{sorted(arrays)}.")
        return self.window(arrays, (0, 0, 0) + tuple(shape), rng)
