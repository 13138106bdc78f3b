"""Synthetic pelvic MR / CT subjects: the demo data set and the tests' fixtures.

Why: the paper's medical study (MR -> CT synthesis plus organ segmentation in the male
pelvis) needs paired, registered MR, CT and label maps that cannot be shipped. These
phantoms keep its hard parts: cortical bone and air are both dark on T2 MR and opposite on
CT, so a network must use context; MR intensities drift with a bias field; subjects differ
in size, pose, organ filling, contrast, voxel size and orientation.

The anatomy is a set of signed-distance shapes in anatomical millimetres (x towards the
patient's right, y anterior, z superior, origin between the femoral heads). A subject's
pose and a smooth deformation place it in scanner (world, RAS+) millimetres, where any grid
samples it: a label is the tissue at a voxel's centre, an intensity the mean over 2x2x2
points inside the voxel (partial volume). A grid's orientation therefore changes the voxel
order, never the anatomy.

Every random quantity of subject ``index`` comes from ``numpy.random.SeedSequence([seed,
index])``, in four independent streams (anatomy, contrast, grid, noise): a subject can be
regenerated alone, and on another grid with the same anatomy.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from sfg_app.arguments import integer, invalid
from sfg_app.data.augmentation import rotation_matrix
from sfg_app.errors import ConfigError
from sfg_app.io import geometry
from sfg_app.io.atomic import atomic_path

LABELS = {0: "background", 1: "body", 2: "bladder", 3: "prostate", 4: "rectum", 5: "bone"}

SUBJECT_PREFIX = "pelvis_"
FILE_SUFFIXES = ("mr", "ct", "seg", "body")
# With a relatedness r: an extra input channel and a regression target (see RelatedSignal).
SIGNAL_SUFFIXES = ("view", "signal")
SIGNAL_FIELD_RMS = 0.25     # root-mean-square of the independent field in the target
SIGNAL_VIEW_NOISE = 0.5     # noise (in units of the field's RMS) of the view channel

# Default acquisition of subject i: orientation i % 6, voxel size i % 5 (voxel-axis order).
ORIENTATIONS = ("RAS", "LPS", "LAS", "PIR", "RPI", "ASL")
SPACINGS = ((5.0, 5.0, 6.0), (5.5, 5.5, 5.5), (5.0, 5.0, 6.5), (6.0, 6.0, 5.0),
            (5.5, 5.5, 6.0))
FIELD_OF_VIEW = (400.0, 300.0, 200.0)   # mm along R-L, A-P, S-I
FOV_CENTRE = (0.0, -18.0, -10.0)        # anatomical mm: the middle of a pelvis scan
OBLIQUE_FRACTION = 1.0 / 3.0            # share of subjects whose grid is tilted


@dataclasses.dataclass(frozen=True)
class Tissue:
    """One tissue class: its label and how a subject draws its T2 MR and CT values.

    MR is in arbitrary units (fat about 650), CT in Hounsfield units. Each subject draws a
    mean within each range, so contrast varies between subjects as between scanners; a
    texture field then varies the value inside the tissue (log-scale for MR, HU for CT).
    """

    name: str
    label: int
    mr: tuple[float, float]
    mr_texture: float
    ct: tuple[float, float]
    ct_texture: float
    texture: str = "soft"


TISSUES = (
    Tissue("background", 0, (0, 0), 0.0, (-1000, -1000), 0.0),
    Tissue("fat", 1, (560, 740), 0.05, (-115, -85), 8.0),
    Tissue("muscle", 1, (120, 170), 0.08, (42, 58), 6.0),
    Tissue("pelvic_fat", 1, (540, 700), 0.06, (-110, -80), 8.0),
    Tissue("cortex", 5, (15, 35), 0.3, (950, 1250), 90.0, "bone"),
    Tissue("marrow", 5, (360, 480), 0.12, (230, 320), 25.0, "bone"),
    Tissue("bladder_wall", 2, (150, 190), 0.08, (35, 50), 5.0),
    Tissue("urine", 2, (950, 1300), 0.03, (6, 14), 3.0),
    Tissue("prostate_pz", 3, (520, 780), 0.1, (35, 45), 5.0),
    Tissue("prostate_tz", 3, (240, 360), 0.15, (35, 45), 5.0),
    Tissue("seminal_vesicle", 1, (800, 1000), 0.1, (25, 40), 5.0),
    Tissue("rectal_wall", 4, (180, 240), 0.1, (35, 50), 5.0),
    Tissue("rectal_content", 4, (280, 420), 0.35, (-20, 40), 35.0, "content"),
    Tissue("rectal_air", 4, (3, 8), 0.0, (-1000, -1000), 0.0),
    Tissue("bowel_wall", 1, (180, 240), 0.1, (35, 50), 5.0),
    Tissue("bowel_content", 1, (550, 750), 0.3, (10, 30), 15.0, "content"),
    Tissue("bowel_gas", 1, (3, 8), 0.0, (-1000, -1000), 0.0),
    Tissue("couch", 0, (0, 0), 0.0, (-480, -420), 15.0),
)
TISSUE_CODE = {tissue.name: code for code, tissue in enumerate(TISSUES)}
TEXTURES = ("soft", "bone", "content")
_TEXTURE_WAVELENGTHS = {"soft": (15.0, 40.0), "bone": (6.0, 14.0), "content": (8.0, 20.0)}


def subject_id(index: int) -> str:
    return f"{SUBJECT_PREFIX}{index:03d}"


# ----------------------------------------------------------------------------- geometry

def axis_directions(axcodes: str) -> np.ndarray:
    """The 3x3 matrix whose column k is the world (RAS+) unit direction of voxel axis k."""
    letters = geometry.standardize_axcodes(tuple(axcodes) if isinstance(axcodes, str)
                                           else axcodes)
    directions = np.zeros((3, 3))
    for column, (axis, sign) in enumerate(orientations.axcodes2ornt(letters)):
        directions[int(axis), column] = sign
    return directions


def rotation_from_degrees(angles_deg) -> np.ndarray:
    """Rotation about the world x, then y, then z axes (degrees)."""
    return rotation_matrix(np.deg2rad(np.asarray(angles_deg, dtype=float)))


def _positive_triple(value, name: str, integer: bool) -> tuple:
    kind = "integers" if integer else "numbers"
    try:
        items = tuple(value)
        ok = len(items) == 3 and all(
            float(v) > 0 and math.isfinite(float(v)) and (not integer or float(v) == int(v))
            for v in items)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise invalid(name, value, f"three strictly positive {kind}")
    return tuple(int(v) for v in items) if integer else tuple(float(v) for v in items)


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """Where a subject's voxels lie: a shape and a voxel-to-world (RAS+ mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "shape", _positive_triple(self.shape, "shape", integer=True))
        affine = np.asarray(self.affine, dtype=float)
        if (affine.shape != (4, 4) or not np.all(np.isfinite(affine))
                or not np.allclose(affine[3], [0, 0, 0, 1])
                or abs(np.linalg.det(affine[:3, :3])) < 1e-9):
            raise ConfigError(
                "Invalid value for argument `affine`. Expected a finite, non-singular 4x4 "
                f"matrix whose last row is (0, 0, 0, 1). Received affine={self.affine!r}.")
        object.__setattr__(self, "affine", affine)

    @classmethod
    def centred(cls, shape, spacing, axcodes: str = "RAS", centre=(0.0, 0.0, 0.0),
                rotation=None) -> Grid:
        """A grid of ``shape`` voxels of ``spacing`` mm whose middle lies at ``centre``.

        ``axcodes`` names where each voxel axis points (nibabel's convention); an optional
        ``rotation`` (3x3, world frame) tilts the whole grid to make it oblique.
        """
        shape = _positive_triple(shape, "shape", integer=True)
        spacing = _positive_triple(spacing, "spacing", integer=False)
        rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
        linear = rotation @ axis_directions(axcodes) @ np.diag(spacing)
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = np.asarray(centre, dtype=float) - linear @ ((np.asarray(shape) - 1) / 2)
        return cls(shape, affine)

    @property
    def spacing(self) -> np.ndarray:
        return geometry.spacing(self.affine)

    @property
    def axcodes(self) -> str:
        return "".join(geometry.axcodes(self.affine))

    @property
    def oblique(self) -> bool:
        directions = self.affine[:3, :3] / self.spacing
        return not np.allclose(np.abs(directions).max(axis=0), 1.0)

    def world(self, flat_indices: np.ndarray, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
        """World coordinates (N, 3) of voxels given by C-order flat indices, shifted by
        ``offset`` voxels."""
        ijk = np.stack(np.unravel_index(flat_indices, self.shape), axis=1) + np.asarray(offset)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


# ------------------------------------------------------------------ smooth random fields

@dataclasses.dataclass(frozen=True, eq=False)
class SmoothField:
    """A random smooth function of position (a sum of plane waves).

    Why: it is defined at every point in millimetres, not on a grid, so every grid samples
    the same texture, bias field or deformation. Each channel has root-mean-square value
    ``amplitude`` over random positions.
    """

    wavevectors: np.ndarray   # (K, 3) radians per mm
    phases: np.ndarray        # (K,)
    weights: np.ndarray       # (K, C)

    @classmethod
    def random(cls, rng: np.random.Generator, components: int, wavelength: tuple[float, float],
               channels: int = 1, amplitude: float = 1.0) -> SmoothField:
        directions = rng.normal(size=(components, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelengths = rng.uniform(*wavelength, size=components)
        weights = rng.normal(size=(components, channels))
        weights *= amplitude / np.sqrt(np.sum(weights ** 2, axis=0) / 2)
        return cls(directions * (2 * np.pi / wavelengths)[:, None],
                   rng.uniform(0, 2 * np.pi, size=components), weights)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return np.cos(points @ self.wavevectors.T + self.phases) @ self.weights


# ------------------------------------------------------------------ signed distances (mm)

def _sphere(x, y, z, centre, radius):
    return np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) - radius


def _ellipse(offsets, radii):
    """Approximate signed distance to an ellipse or ellipsoid centred at the origin, from
    the offsets along its axes (exact on the axes, close elsewhere)."""
    k0 = np.sqrt(sum((d / r) ** 2 for d, r in zip(offsets, radii)))
    k1 = np.sqrt(sum((d / r ** 2) ** 2 for d, r in zip(offsets, radii)))
    return np.where(k1 > 1e-12, k0 * (k0 - 1) / np.maximum(k1, 1e-12), -min(radii))


def _ellipsoid(x, y, z, centre, radii):
    return _ellipse((x - centre[0], y - centre[1], z - centre[2]), radii)


def _capsule(x, y, z, start, end, radius, end_radius=None):
    """Distance to a segment minus a radius that may taper from start to end."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    axis = end - start
    px, py, pz = x - start[0], y - start[1], z - start[2]
    t = np.clip((px * axis[0] + py * axis[1] + pz * axis[2]) / axis.dot(axis), 0.0, 1.0)
    distance = np.sqrt((px - t * axis[0]) ** 2 + (py - t * axis[1]) ** 2
                       + (pz - t * axis[2]) ** 2)
    end_radius = radius if end_radius is None else end_radius
    return distance - (radius + (end_radius - radius) * t)


def _tube(x, y, z, path, radii):
    """A tube along a polyline whose radius varies linearly between its vertices."""
    return np.min([_capsule(x, y, z, path[i], path[i + 1], radii[i], radii[i + 1])
                   for i in range(len(path) - 1)], axis=0)


def _smooth_union(k, *distances):
    """Union whose seams are rounded over about ``k`` mm, as bones and soft tissue join."""
    result = distances[0]
    for d in distances[1:]:
        h = np.clip(0.5 + 0.5 * (d - result) / k, 0.0, 1.0)
        result = d * (1 - h) + result * h - k * h * (1 - h)
    return result


# ------------------------------------------------------------------------------ anatomy

@dataclasses.dataclass(frozen=True, eq=False)
class Pose:
    """Where the anatomical frame sits in the scanner: rotation, scale, translation."""

    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator) -> Pose:
        angles = rng.uniform(-1, 1, size=3) * np.array([8.0, 3.0, 3.0])  # tilt, roll, yaw
        scale = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, size=3)
        translation = np.array([rng.normal(0, 12), rng.normal(15, 12), rng.uniform(-80, 80)])
        return cls(rotation_from_degrees(angles), translation, scale)

    def to_anatomy(self, world: np.ndarray) -> np.ndarray:
        return ((world - self.translation) @ self.rotation) / self.scale

    def to_world(self, anatomical) -> np.ndarray:
        return (np.asarray(anatomical, float) * self.scale) @ self.rotation.T + self.translation


@dataclasses.dataclass(frozen=True)
class Body:
    """The body outline (trunk, thighs, perineum) and its subcutaneous fat."""

    half_width: float
    half_depth: float
    centre_y: float
    exponent: float
    fat: float
    floor: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Body:
        half_width = rng.uniform(165, 190)
        return cls(half_width=half_width, half_depth=rng.uniform(122, 142),
                   centre_y=rng.uniform(-22, -12), exponent=rng.uniform(2.2, 2.8),
                   fat=rng.uniform(8, min(32.0, half_width - 145)), floor=rng.uniform(-98, -90))

    def sdf(self, x, y, z):
        a = self.half_width * (1 - 0.06 * ((z + 30) / 110) ** 2)
        b = self.half_depth * (1 + 0.05 * np.clip((z - 20) / 80, -1, 1))
        n = self.exponent
        u, v = np.abs(x) / a + 1e-9, np.abs(y - self.centre_y) / b + 1e-9
        r = (u ** n + v ** n) ** (1 / n)
        gradient = r ** (1 - n) * np.sqrt((u ** (n - 1) / a) ** 2 + (v ** (n - 1) / b) ** 2)
        buttocks = 25 * np.clip(-(y - self.centre_y) / self.half_depth, 0, 1)
        trunk = np.maximum((r - 1) / gradient, self.floor - buttocks - z)
        thigh_centre = (0.5 * self.half_width, self.centre_y + 0.1 * self.half_depth)
        thigh_radii = (0.5 * self.half_width, 0.68 * self.half_depth)
        thighs = [np.maximum(_ellipse((x - side * thigh_centre[0], y - thigh_centre[1]),
                                      thigh_radii), z + 40) for side in (1, -1)]
        perineum = _ellipsoid(x, y, z, (0, -20, self.floor - 10), (32, 50, 28))
        return _smooth_union(15.0, trunk, *thighs, perineum)

    def fat_depth(self, y):
        """Subcutaneous fat is thicker over the buttocks than in front."""
        return self.fat * (1 + 0.6 * np.clip(-(y - self.centre_y) / self.half_depth, 0, 1))

    def posterior_extent(self) -> float:
        return self.centre_y - self.half_depth * 1.05


_HEAD = (88.0, 15.0, -15.0)   # right femoral head centre, before the pelvis width scales x


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """Hip bones, sacrum and femurs, mirrored left-right; a signed distance and a cortex."""

    width: float
    head_radius: float
    cortex: float
    shaft_cortex: float
    sacral_depth: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Skeleton:
        return cls(width=rng.uniform(0.93, 1.07), head_radius=rng.uniform(21, 26),
                   cortex=rng.uniform(2.5, 4.0), shaft_cortex=rng.uniform(5.0, 7.0),
                   sacral_depth=rng.uniform(-6, 6))

    @property
    def head_centre(self) -> np.ndarray:
        """The right femoral head's centre in anatomical mm (mirror x for the left)."""
        return np.array(_HEAD) * [self.width, 1, 1]

    def sdf(self, x, y, z):
        xm = np.abs(x) / self.width
        return np.minimum(np.minimum(self._femur(xm, y, z), self._hip(xm, y, z)),
                          self._sacrum(xm, y, z))

    def paint(self, paint: _Painter, x, y, z) -> None:
        """Cortex where the bone's signed distance is within the cortex thickness, marrow
        deeper (the femoral shaft's cortex is thicker)."""
        bone = self.sdf(x, y, z)
        cortex = self.cortex + (self.shaft_cortex - self.cortex) * np.clip((-60 - z) / 40, 0, 1)
        paint(bone <= 0, "cortex")
        paint(bone <= -cortex, "marrow")

    def _femur(self, x, y, z):
        r = self.head_radius
        return _smooth_union(
            6.0,
            _sphere(x, y, z, _HEAD, r),
            _capsule(x, y, z, _HEAD, (112, 2, -45), 0.6 * r),
            _sphere(x, y, z, (120, -8, -38), 0.8 * r),
            _capsule(x, y, z, (114, -2, -50), (104, 8, -260), 0.62 * r),
            _sphere(x, y, z, (98, -4, -75), 9.0))

    def _hip(self, x, y, z):
        r = self.head_radius
        head = np.array(_HEAD)
        distance = _sphere(x, y, z, head, 0.0)
        cup_axis = np.array([-0.55, -0.15, 0.82]) / np.linalg.norm([-0.55, -0.15, 0.82])
        towards_cup = ((x - head[0]) * cup_axis[0] + (y - head[1]) * cup_axis[1]
                       + (z - head[2]) * cup_axis[2])
        acetabulum = np.maximum.reduce([distance - (r + 16), (r + 2.5) - distance,
                                        -10 - towards_cup])
        angle = np.arctan2(y + 20, x)
        rho = np.hypot(x, y + 20)
        wing = np.maximum.reduce([
            np.abs(_ellipsoid(x, y, z, (0, -20, 220), (135, 95, 260)))
            - np.clip(16 - 0.25 * z, 7, 16) / 2,
            np.maximum(angle - np.deg2rad(38), np.deg2rad(-55) - angle) * rho,
            -12 - z,
            z - (100 - 40 * ((angle + np.deg2rad(12)) / np.deg2rad(50)) ** 2)])
        pubis = _smooth_union(
            6.0,
            _capsule(x, y, z, (68, 38, -12), (14, 66, -26), 10.0),
            _ellipsoid(x, y, z, (13, 70, -35), (11, 12, 20)),
            _capsule(x, y, z, (14, 66, -50), (52, 5, -72), 8.0))
        ischium = _smooth_union(
            6.0,
            _capsule(x, y, z, (74, -8, -22), (58, -18, -68), 14.0),
            _sphere(x, y, z, (56, -18, -74), 16.0))
        return _smooth_union(8.0, acetabulum, wing, pubis, ischium)

    def _sacrum(self, x, y, z):
        """A plate bent along the sacral curve, narrowing down to the coccyx."""
        levels = (-62, -35, 0, 40, 80, 105)
        middle = (np.interp(z, levels, (-62, -80, -92, -92, -78, -66)) + self.sacral_depth
                  + 0.006 * x ** 2)   # the alae curve forwards
        half_width = np.interp(z, levels, (6, 22, 36, 48, 55, 52))
        half_thickness = np.interp(z, levels, (5, 8, 11, 15, 20, 22))
        rounding = 0.7 * half_thickness
        d = np.stack([x - half_width + rounding, np.abs(y - middle) - half_thickness + rounding,
                      np.maximum(levels[0] - z, z - levels[-1]) + rounding])
        return (np.linalg.norm(np.maximum(d, 0), axis=0) + np.minimum(d.max(axis=0), 0)
                - rounding)


@dataclasses.dataclass(frozen=True, eq=False)
class Organs:
    """Bladder, prostate (two zones), seminal vesicles, rectum with gas, bowel loops."""

    prostate_centre: np.ndarray
    prostate_radii: np.ndarray
    transition_centre: np.ndarray
    transition_radii: np.ndarray
    bladder_centre: np.ndarray
    bladder_radii: np.ndarray
    bladder_wall: float
    vesicle_centres: np.ndarray
    vesicle_radii: np.ndarray
    rectum_path: np.ndarray
    rectum_radii: np.ndarray
    rectum_wall: float
    gas_centres: np.ndarray
    gas_radii: np.ndarray
    bowel_ends: np.ndarray      # (L, 2, 3)
    bowel_radii: np.ndarray     # (L,)
    bowel_gas: np.ndarray       # (L,) radius of a gas bubble at the loop's start, 0 for none

    @classmethod
    def random(cls, rng: np.random.Generator) -> Organs:
        size = rng.uniform(0.85, 1.4)
        prostate_radii = np.array([20.0, 15.0, 17.0]) * size * rng.uniform(0.95, 1.05, 3)
        prostate_centre = np.array([rng.normal(0, 2), 22 + rng.normal(0, 3),
                                    -30 + rng.normal(0, 3)])
        transition_radii = prostate_radii * rng.uniform(0.5, 0.72)
        transition_centre = prostate_centre + np.array(
            [0, 0.2 * prostate_radii[1], 0.15 * prostate_radii[2]])
        prostate_top = prostate_centre[2] + prostate_radii[2]

        fill = rng.uniform(0.55, 1.3)
        bladder_radii = np.array([44 * (0.6 + 0.4 * fill), 36 * fill, 32 * fill])
        bladder_centre = np.array([rng.normal(0, 3), 26 + rng.normal(0, 3),
                                   prostate_top + 0.85 * bladder_radii[2]])
        bladder_wall = 3 + 3 * (1.3 - fill) / 0.75

        vesicle_radii = np.array([17.0, 6.0, 8.0]) * rng.uniform(0.8, 1.2)
        vesicle_y = prostate_centre[1] - 0.5 * prostate_radii[1] - 4
        vesicle_centres = np.array([[side * rng.uniform(14, 19), vesicle_y, prostate_top + 6]
                                    for side in (1, -1)])

        filling = rng.uniform(0.75, 1.25)
        rectum_radii = np.array([6, 9, 13 * filling, 19 * filling, 17 * filling,
                                 13 * filling, 12])
        behind_prostate = prostate_centre[1] - prostate_radii[1] - 3 - rectum_radii[2]
        rectum_path = np.array([[0, -40, -108], [0, -22, -66], [0, behind_prostate, -35],
                                [0, -32, 0], [3, -52, 35], [12, -48, 62], [30, -25, 78]],
                               dtype=float)
        rectum_path[1:, :2] += rng.normal(0, 3, size=(6, 2))
        rectum_wall = rng.uniform(3, 4)

        gas_centres, gas_radii = _rectal_gas(rng, rectum_path, rectum_radii - rectum_wall)
        return cls(prostate_centre, prostate_radii, transition_centre, transition_radii,
                   bladder_centre, bladder_radii, bladder_wall, vesicle_centres,
                   vesicle_radii, rectum_path, rectum_radii, rectum_wall,
                   gas_centres, gas_radii, *_bowel_loops(rng))

    def paint(self, paint: _Painter, x, y, z, interior: np.ndarray) -> None:
        """Bowel loops, then rectum, seminal vesicles, bladder and prostate, each over the
        last where they touch."""
        for (start, end), radius, gas in zip(self.bowel_ends, self.bowel_radii, self.bowel_gas):
            loop = _capsule(x, y, z, start, end, radius)
            paint(interior & (loop <= 0), "bowel_wall")
            paint(interior & (loop <= -3), "bowel_content")
            if gas > 0:   # gas rises to the loop's anterior side
                bubble = _sphere(x, y, z, start + np.array([0, radius - 3 - gas, 0]), gas)
                paint(interior & (loop <= -3) & (bubble <= 0), "bowel_gas")

        rectum = _tube(x, y, z, self.rectum_path, self.rectum_radii)
        lumen = rectum <= -self.rectum_wall
        paint(rectum <= 0, "rectal_wall")
        paint(lumen, "rectal_content")
        gas = np.min([_sphere(x, y, z, c, r) for c, r in zip(self.gas_centres, self.gas_radii)],
                     axis=0)
        paint(lumen & (gas <= 0), "rectal_air")

        for centre in self.vesicle_centres:
            paint(_ellipsoid(x, y, z, centre, self.vesicle_radii) <= 0, "seminal_vesicle")
        bladder = _ellipsoid(x, y, z, self.bladder_centre, self.bladder_radii)
        paint(bladder <= 0, "bladder_wall")
        paint(bladder <= -self.bladder_wall, "urine")
        paint(_ellipsoid(x, y, z, self.prostate_centre, self.prostate_radii) <= 0,
              "prostate_pz")
        paint(_ellipsoid(x, y, z, self.transition_centre, self.transition_radii) <= 0,
              "prostate_tz")


def _rectal_gas(rng: np.random.Generator, path: np.ndarray, lumen_radii: np.ndarray):
    """One to four gas pockets in the rectal ampulla, on the lumen's anterior side (where
    gas rises in a supine patient); at least 6 mm across so that 5 mm voxels see them."""
    centres, radii = [], []
    for _ in range(rng.integers(1, 5)):
        segment = rng.integers(2, 5)
        t = rng.uniform(0, 1)
        lumen = (1 - t) * lumen_radii[segment] + t * lumen_radii[segment + 1]
        centre = (1 - t) * path[segment] + t * path[segment + 1]
        centres.append(centre + np.array([0, 0.5 * lumen, 0]))
        radii.append(max(6.0, rng.uniform(0.45, 0.8) * lumen))
    return np.array(centres), np.array(radii)


def _bowel_loops(rng: np.random.Generator):
    """Two to four small-bowel loops above the bladder, half of them holding gas (more
    dark-on-MR air that is not rectum)."""
    loops = rng.integers(2, 5)
    starts = rng.uniform([-55, -10, 40], [55, 55, 95], size=(loops, 3))
    directions = rng.normal(size=(loops, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    ends = starts + directions * rng.uniform(25, 55, size=(loops, 1))
    radii = rng.uniform(9, 14, size=loops)
    has_gas = rng.random(loops) < 0.5
    gas = np.where(has_gas, rng.uniform(4, 0.7 * (radii - 3)), 0.0)
    return np.stack([starts, ends], axis=1), radii, gas


@dataclasses.dataclass(frozen=True, eq=False)
class Anatomy:
    """One subject's body in world millimetres: which tissue is at any point."""

    pose: Pose
    deformation: SmoothField
    body: Body
    skeleton: Skeleton
    organs: Organs
    textures: dict[str, SmoothField]

    @classmethod
    def random(cls, rng: np.random.Generator) -> Anatomy:
        return cls(
            pose=Pose.random(rng),
            deformation=SmoothField.random(rng, 4, (150.0, 300.0), channels=3,
                                           amplitude=rng.uniform(1.5, 3.0)),
            body=Body.random(rng), skeleton=Skeleton.random(rng), organs=Organs.random(rng),
            textures={kind: SmoothField.random(rng, 16, _TEXTURE_WAVELENGTHS[kind])
                      for kind in TEXTURES})

    def anatomical(self, world: np.ndarray) -> np.ndarray:
        """Anatomical coordinates of world points: undo the pose, then deform smoothly."""
        points = self.pose.to_anatomy(world)
        return points + self.deformation(points)

    def texture(self, world: np.ndarray) -> np.ndarray:
        """(N, len(TEXTURES)) unit-variance textures bound to the anatomy."""
        points = self.anatomical(world)
        return np.concatenate([self.textures[kind](points) for kind in TEXTURES], axis=1)

    def tissue(self, world: np.ndarray) -> np.ndarray:
        """The tissue code (index into TISSUES) at each world point (N, 3)."""
        x, y, z = self.anatomical(world).T
        body = self.body.sdf(x, y, z)
        interior = body <= -self.body.fat_depth(y)
        paint = _Painter(body <= 0)
        paint(body <= 0, "fat")
        paint(interior, "muscle")
        width = self.skeleton.width
        pelvic_fat = np.minimum.reduce([
            _ellipsoid(x, y, z, (0, 8, -15), (40 * width, 58, 65)),
            _ellipsoid(x, y, z, (0, 5, 65), (80 * width, 65, 45)),
            _ellipsoid(np.abs(x), y, z, (30, -38, -78), (20, 28, 24))])   # ischiorectal
        paint(interior & (pelvic_fat <= 0), "pelvic_fat")
        self.organs.paint(paint, x, y, z, interior)
        self.skeleton.paint(paint, x, y, z)
        codes = paint.codes
        codes[self._couch(world) & (body > 0)] = TISSUE_CODE["couch"]
        return codes

    def _couch(self, world: np.ndarray) -> np.ndarray:
        """The CT couch, level in the scanner under the patient's back: seen on CT only,
        outside the body mask, as in planning CT."""
        top = self.pose.translation[1] + self.pose.scale[1] * self.body.posterior_extent()
        height = world[:, 1] - top
        return ((height <= 0) & (height >= -45)
                & (np.abs(world[:, 0] - self.pose.translation[0]) <= 240))


class _Painter:
    """Tissue codes of points, painted in order inside the body: a later structure covers
    an earlier one (bone over organs over fat and muscle)."""

    def __init__(self, inside: np.ndarray):
        self.inside = inside
        self.codes = np.zeros(len(inside), dtype=np.uint8)

    def __call__(self, mask: np.ndarray, name: str) -> None:
        self.codes[mask & self.inside] = TISSUE_CODE[name]


# ----------------------------------------------------------------------------- contrast

@dataclasses.dataclass(frozen=True, eq=False)
class Contrast:
    """A subject's scanner: tissue means, MR bias field, noise levels."""

    mr_mean: np.ndarray      # (len(TISSUES),)
    ct_mean: np.ndarray
    bias: SmoothField
    mr_noise: float
    ct_noise: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Contrast:
        mr_mean = np.array([rng.uniform(*t.mr) for t in TISSUES])
        ct_mean = np.array([rng.uniform(*t.ct) for t in TISSUES])
        bias = SmoothField.random(rng, 4, (250.0, 600.0), amplitude=rng.uniform(0.08, 0.18))
        mr_noise = rng.uniform(0.012, 0.025) * mr_mean[TISSUE_CODE["fat"]]
        return cls(mr_mean, ct_mean, bias, mr_noise=mr_noise, ct_noise=rng.uniform(6, 12))


_MR_TEXTURE = np.array([t.mr_texture for t in TISSUES])
_CT_TEXTURE = np.array([t.ct_texture for t in TISSUES])
_TEXTURE_OF = np.array([TEXTURES.index(t.texture) for t in TISSUES])
_LABEL_OF = np.array([t.label for t in TISSUES], dtype=np.uint8)
_SUBSAMPLES = np.array([[i, j, k] for i in (-0.25, 0.25) for j in (-0.25, 0.25)
                        for k in (-0.25, 0.25)])


# ------------------------------------------------------------------------------ subjects

@dataclasses.dataclass(frozen=True, eq=False)
class Phantom:
    """One subject on one grid: the four images that are written, plus the ground truth
    behind them (tissue at each voxel centre, tissue fractions inside each voxel)."""

    subject_id: str
    affine: np.ndarray
    mr: np.ndarray          # int16, T2-like arbitrary units, >= 0
    ct: np.ndarray          # int16 HU
    seg: np.ndarray         # uint8, LABELS
    body: np.ndarray        # uint8 0/1
    tissue: np.ndarray      # uint8 index into TISSUES
    fractions: np.ndarray   # float32 (X, Y, Z, len(TISSUES))


def _sample(anatomy: Anatomy, contrast: Contrast, grid: Grid, flat: np.ndarray):
    """Noise-free values of some voxels: the tissue at each centre, the tissue fractions
    over 2x2x2 points inside each voxel, and the partial-volume MR and CT."""
    centres = grid.world(flat)
    points = np.concatenate([centres] + [grid.world(flat, offset) for offset in _SUBSAMPLES])
    codes = anatomy.tissue(points).reshape(len(_SUBSAMPLES) + 1, len(flat))
    fractions = (np.eye(len(TISSUES), dtype=np.float32)[codes[1:]].sum(axis=0)
                 / len(_SUBSAMPLES))
    texture = anatomy.texture(centres)[:, _TEXTURE_OF]
    mr_values = contrast.mr_mean * np.exp(_MR_TEXTURE * texture)
    ct_values = contrast.ct_mean + _CT_TEXTURE * texture
    bias = np.exp(contrast.bias(centres)[:, 0])
    mr = bias * np.sum(fractions * mr_values, axis=1)
    return codes[0], fractions, mr, np.sum(fractions * ct_values, axis=1)


class PelvisPhantoms:
    """The phantom subjects of one seed; subject ``index`` depends on (seed, index) only."""

    def __init__(self, seed: int):
        self.seed = integer(seed, "seed", minimum=0)

    def _streams(self, index: int) -> list[np.random.Generator]:
        index = integer(index, "index", minimum=0)
        # A fifth stream for the relatedness signal leaves the first four as they were.
        children = np.random.SeedSequence([self.seed, index]).spawn(5)
        return [np.random.default_rng(child) for child in children]

    def anatomy(self, index: int) -> Anatomy:
        return Anatomy.random(self._streams(index)[0])

    def contrast(self, index: int) -> Contrast:
        return Contrast.random(self._streams(index)[1])

    def grid(self, index: int, shape=None) -> Grid:
        """The subject's acquisition: orientation, field of view, position, and with
        probability 1/3 an oblique tilt. The voxel size is the default one, or the one that
        covers the same field with ``shape`` voxels (tiny subjects for fast tests)."""
        rng = self._streams(index)[2]
        axcodes = ORIENTATIONS[index % len(ORIENTATIONS)]
        spacing = np.array(SPACINGS[index % len(SPACINGS)])
        world_axis = np.abs(axis_directions(axcodes)).argmax(axis=0)
        field = np.array(FIELD_OF_VIEW)[world_axis] * rng.uniform(0.98, 1.04)
        if shape is None:
            shape = np.ceil(field / spacing).astype(int)
        else:
            shape = np.array(_positive_triple(shape, "shape", integer=True))
            spacing = field / shape
        rotation = None
        if rng.random() < OBLIQUE_FRACTION:
            angles = np.zeros(3)
            angles[rng.integers(3)] = rng.choice([-1, 1]) * rng.uniform(4, 10)
            rotation = rotation_from_degrees(angles)
        centre = self.anatomy(index).pose.to_world(np.array(FOV_CENTRE)
                                                   + rng.normal(0, 8, size=3))
        return Grid.centred(shape, spacing, axcodes, centre, rotation)

    def related_signal(self, index: int, grid: Grid, ct: np.ndarray, relatedness: float,
                       chunk: int = 16384) -> RelatedSignal:
        """Subject ``index``'s view channel and signal target on ``grid`` (the grid of its
        ``ct``), at ``relatedness`` (see RelatedSignal)."""
        relatedness = _relatedness(relatedness)
        rng = self._streams(index)[4]
        field = SmoothField.random(rng, 8, (40.0, 120.0), amplitude=SIGNAL_FIELD_RMS)
        size = int(np.prod(grid.shape))
        values = np.concatenate([field(grid.world(np.arange(start, min(start + chunk, size))))
                                 [:, 0] for start in range(0, size, chunk)])
        view = values / SIGNAL_FIELD_RMS + rng.normal(0, SIGNAL_VIEW_NOISE, size)
        signal = relatedness * np.asarray(ct, np.float64).ravel() / 1000.0 \
            + (1.0 - relatedness) * values
        return RelatedSignal(relatedness, view.reshape(grid.shape).astype(np.float32),
                             signal.reshape(grid.shape).astype(np.float32))

    def subject(self, index: int, grid: Grid | None = None, chunk: int = 16384) -> Phantom:
        """Subject ``index`` sampled on ``grid`` (its default acquisition when None), in
        chunks of ``chunk`` voxels to bound memory; MR gets Rician noise, CT Gaussian."""
        anatomy, contrast = self.anatomy(index), self.contrast(index)
        noise_rng = self._streams(index)[3]
        grid = self.grid(index) if grid is None else grid
        size = int(np.prod(grid.shape))
        tissue = np.empty(size, dtype=np.uint8)
        fractions = np.empty((size, len(TISSUES)), dtype=np.float32)
        mr, ct = np.empty(size), np.empty(size)
        for start in range(0, size, chunk):
            flat = np.arange(start, min(start + chunk, size))
            tissue[flat], fractions[flat], mr[flat], ct[flat] = _sample(anatomy, contrast,
                                                                        grid, flat)
        real = mr + noise_rng.normal(0, contrast.mr_noise, size)
        imaginary = noise_rng.normal(0, contrast.mr_noise, size)
        mr = np.clip(np.rint(np.sqrt(real ** 2 + imaginary ** 2)), 0, 32767)
        ct = np.clip(np.rint(ct + noise_rng.normal(0, contrast.ct_noise, size)), -1024, 3000)
        seg = _LABEL_OF[tissue]
        shape = grid.shape
        return Phantom(subject_id(index), grid.affine, mr.reshape(shape).astype(np.int16),
                       ct.reshape(shape).astype(np.int16), seg.reshape(shape),
                       (seg > 0).astype(np.uint8).reshape(shape), tissue.reshape(shape),
                       fractions.reshape(shape + (len(TISSUES),)))


@dataclasses.dataclass(frozen=True, eq=False)
class RelatedSignal:
    """A second task whose relatedness to the anatomy is one number, r in [0, 1].

    Why: whether SFG's allocation follows how related two tasks are can only be tested on
    data where that is known and set. ``signal = r * ct / 1000 + (1 - r) * field``, where
    ``field`` is a smooth random field in world millimetres, independent of the anatomy
    (RMS ``SIGNAL_FIELD_RMS``); ``view`` is an extra input channel showing only the field,
    with noise (``field / SIGNAL_FIELD_RMS + N(0, SIGNAL_VIEW_NOISE)``). At r = 0 the
    signal is unrelated to the organs and is read from its own channel; at r = 1 it is
    the CT in thousands of HU, identical in content to MR -> CT synthesis, and the view
    channel carries nothing it needs; between, a mix. Both float32.
    """

    relatedness: float
    view: np.ndarray
    signal: np.ndarray


def _relatedness(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise invalid("relatedness", value, "a number in [0, 1] (0: unrelated to the "
                      "anatomy, 1: identical in content to the CT)")
    return number


# ------------------------------------------------------------------------------ writing

def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write with both qform and sform set (scanner code) and millimetre units."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as temporary:
        nib.save(image, temporary)


def write_subject(phantom: Phantom, folder,
                  signal: RelatedSignal | None = None) -> dict[str, Path]:
    """Write ``<id>_mr``, ``_ct``, ``_seg`` and ``_body`` NIfTI files, and with ``signal``
    ``_view`` and ``_signal``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = {suffix: getattr(phantom, suffix) for suffix in FILE_SUFFIXES}
    if signal is not None:
        images.update(view=signal.view, signal=signal.signal)
    paths = {suffix: folder / f"{phantom.subject_id}_{suffix}.nii.gz" for suffix in images}
    for suffix, path in paths.items():
        _write_nifti(path, images[suffix], phantom.affine)
    return paths


def write_dataset(folder, subjects: int, seed: int, shape=None,
                  relatedness: float | None = None) -> list[dict[str, Path]]:
    """Generate and write subjects 0 .. subjects-1 of ``seed``, on their default grids or
    on grids of ``shape`` voxels over the same fields of view, with the view and signal
    images of ``relatedness`` unless it is None; returns their paths."""
    subjects = integer(subjects, "subjects", minimum=1)
    if relatedness is not None:
        relatedness = _relatedness(relatedness)
    generator = PelvisPhantoms(seed)
    written = []
    for index in range(subjects):
        grid = generator.grid(index, shape)
        phantom = generator.subject(index, grid)
        signal = None if relatedness is None else generator.related_signal(
            index, grid, phantom.ct, relatedness)
        written.append(write_subject(phantom, folder, signal))
    return written
