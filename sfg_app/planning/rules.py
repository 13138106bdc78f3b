"""From a fingerprint to planned values, each with the reason ``sfg_plan`` writes above it.

The rules follow nnU-Net's (Isensee et al., Nature Methods 2021), kept simple:

- **Orientation** ``axcodes``: (R, A, S), unless most images share another orientation
  (then theirs: no reorientation for most). An anisotropic dataset's coarse axis is put
  last, so that 2D windows (x, y, 1) lie in the fine plane.
- **Voxel size** ``pixdim``: the median spacing per axis. Anisotropic (the coarsest
  median spacing more than `ANISOTROPY` times the finest): the coarse axis takes the 10th
  percentile of its spacings instead, and the windows are 2D.
- **Intensities**: a CT (values in Hounsfield units, `fingerprint.ct_like`) is clipped to
  its foreground's 0.5 and 99.5 percentiles (`percentile_clip`, foreground above -500 HU:
  `foreground_type = threshold`) and z-scored there; an MR or any other image is
  z-scored in its Otsu foreground.
- **Tasks**: a segmentation's classes are 0 .. the largest label; labels with gaps are
  refused (no `[TASK]` key maps label values), naming a file and the values. A
  regression learns ``(y - shift) / scale`` with the shift and half-width of the
  target's 1-99 percentile range (in its mask when the task has one).
- **Window and batch**: the largest window (a multiple of 8 voxels, at most 128 per axis
  in 3D, 512 in 2D, never larger than the smallest volume) whose training activations
  fit in the memory budget with a batch of 2, shrinking the axis of largest extent in mm
  first; 3D steps take 2 windows (nnU-Net's), 2D steps as many as fit, at most 64 and
  5 % of the dataset's voxels. The estimate (`activation_bytes`): float32,
  `TENSORS_PER_CHANNEL` tensors per channel of every convolution (measured), over the
  network's widths.
  Budget: half the available memory of a CPU machine (the data workers and the volume
  cache share it), 85 % of a GPU's. On a CPU the arithmetic binds before the memory does
  (on the demo's data the window that 11 GiB allow at full width holds 3.4 times the
  demo's voxels at 4 times its arithmetic per voxel): the network is planned at half
  width (`CPU_LAYER_SCALE`, unless given) and a step does at most `CPU_STEP_SECONDS` of
  arithmetic at `CPU_FLOPS_PER_CORE` per core (`training_flops`).
- **Sampler**: balanced when a class holds less than `RARE_CLASS` of the voxels.
- **Schedule**: ``max_iter`` gives each training voxel about `PASSES` windows (1000 to
  50000 iterations); the SFG schedule keeps the recipe's proportions (150 warm-up and 100
  fine-tuning iterations of 240, the temperature at 0.3 of its start by the end).
- **Inference border**: an eighth of the window, at most the network's receptive-field
  radius (always less than half the window).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from sfg_app.errors import ConfigError, DataError
from sfg_app.io import geometry
from sfg_app.networks.stages import HIGHRES_STAGES, VGG_STAGES, StageSpec
from sfg_app.planning.fingerprint import AIR_HU, Header, Intensities, Labels, Values, ct_like

ANISOTROPY = 3.0
RARE_CLASS = 0.05
PASSES = 100
MIN_ITER, MAX_ITER = 1000, 50000
#: Measured on CPU (peak RSS of 3 training steps of sfg_highres3dnet at layer_scale 0.5,
#: batch 2, windows of 24^3 and 48^3: 6.7 KB more per window voxel, 3.7 float32 tensors
#: per channel of every convolution), rounded up.
TENSORS_PER_CHANNEL = 4
#: Share of the memory the training activations may take, by device kind.
BUDGET_SHARE = {"cpu": 0.5, "gpu": 0.85}
#: A CPU training step's arithmetic budget: seconds at a sustained rate per core. 50
#: GFLOP/s is about 60 % of an AVX2 core's float32 roof; measured, the plan for the
#: demo's data (178 GFLOP a step) took 2.1 s a step on 2 AMD EPYC AVX2 cores, data
#: included. An AVX-512 core does about twice as much.
CPU_STEP_SECONDS = 2.0
CPU_FLOPS_PER_CORE = 50e9
#: The width planned for a CPU: a quarter of the arithmetic per voxel of full width.
CPU_LAYER_SCALE = 0.5
WINDOW_STEP = 8
WINDOW_CAP = {3: 128, 2: 512}
#: The stage tables of the registered networks (read without importing Keras); a
#: network not listed is estimated as HighRes3DNet.
NETWORK_STAGES = {"sfg_highres3dnet": HIGHRES_STAGES, "highres3dnet": HIGHRES_STAGES,
                  "hard_shared": HIGHRES_STAGES, "cross_stitch": HIGHRES_STAGES,
                  "sfg_vgg": VGG_STAGES}


@dataclass(frozen=True)
class Planned:
    """A planned value and why."""

    value: Any
    reason: str


@dataclass
class Plan:
    """Planned values by section header and key, in the order they are written, and
    the warnings about what the plan cannot fix."""

    sections: dict[str, dict[str, Planned]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def set(self, header: str, key: str, value: Any, reason: str) -> None:
        self.sections.setdefault(header, {})[key] = Planned(value, reason)


def fmt(number: float) -> str:
    return f"{number:.4g}"


def triple(values) -> str:
    return "(" + ", ".join(fmt(float(v)) for v in values) + ")"


# ------------------------------------------------------------------ geometry

def choose_axcodes(headers: Sequence[Header]) -> tuple[tuple[str, str, str], str]:
    """(R, A, S) unless more than half the images share another orientation."""
    counts = Counter(h.axcodes for h in headers)
    common, count = counts.most_common(1)[0]
    if common != ("R", "A", "S") and count > len(headers) / 2:
        return common, (f"{count} of {len(headers)} images are {''.join(common)}: kept, so "
                        "that most are not reoriented")
    found = ", ".join(f"{''.join(codes)} x{n}" for codes, n in counts.most_common(4))
    return ("R", "A", "S"), f"RAS+ (the images: {found})"


def oriented(header: Header, axcodes) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The spacing and shape of a file's grid once reoriented to ``axcodes``."""
    ornt = geometry.orientation_to(header.affine, axcodes)
    shape = geometry.reoriented_shape(header.shape, ornt)
    affine = geometry.reoriented_affine(header.affine, header.shape, ornt)
    return geometry.spacing(affine), shape


@dataclass(frozen=True)
class Spacing:
    pixdim: tuple[float, float, float]
    coarse_axis: int | None     # the anisotropic axis (2D windows), or None
    reason: str


def choose_spacing(headers: Sequence[Header], axcodes) -> Spacing:
    """The median spacing per axis; the nnU-Net rule for an anisotropic axis (module
    docstring). Axes that are one voxel thick in every image (2D images) keep 1 mm and
    are left out of the anisotropy test."""
    grids = [oriented(h, axcodes) for h in headers]
    spacings = np.array([s for s, _ in grids])
    flat = np.array([all(shape[axis] == 1 for _, shape in grids) for axis in range(3)])
    median = np.median(spacings, axis=0)
    pixdim = median.copy()
    pixdim[flat] = 1.0
    text = f"the median spacing {triple(median)} mm"
    live = np.flatnonzero(~flat)
    coarse = None
    if live.size >= 2:
        finest, coarsest = median[live].min(), median[live].max()
        if coarsest > ANISOTROPY * finest:
            coarse = int(live[np.argmax(median[live])])
            pixdim[coarse] = float(np.percentile(spacings[:, coarse], 10))
            text += (f"; axis {coarse} is {coarsest / finest:.1f}x coarser than the finest "
                     f"(more than {ANISOTROPY:g}x: anisotropic), so it takes the 10th "
                     f"percentile of its spacings, {fmt(pixdim[coarse])} mm (nnU-Net), and "
                     "the windows are 2D")
        else:
            text += (f"; the coarsest axis is {coarsest / finest:.1f}x the finest (at most "
                     f"{ANISOTROPY:g}x: isotropic enough for 3D windows)")
    return Spacing(tuple(round(float(v), 4) for v in pixdim), coarse, text)


def coarse_axis_last(axcodes, pixdim, coarse: int):
    """The same grid with the coarse axis permuted to the third place."""
    order = [axis for axis in range(3) if axis != coarse] + [coarse]
    return tuple(axcodes[a] for a in order), tuple(pixdim[a] for a in order)


def resampled_shapes(headers: Sequence[Header], axcodes, pixdim) -> np.ndarray:
    """(N, 3) shapes of the images once reoriented and resampled to ``pixdim``."""
    shapes = []
    for header in headers:
        ornt = geometry.orientation_to(header.affine, axcodes)
        shape = geometry.reoriented_shape(header.shape, ornt)
        affine = geometry.reoriented_affine(header.affine, header.shape, ornt)
        shapes.append(geometry.resampled_grid(affine, shape, pixdim)[1])
    return np.array(shapes, dtype=np.int64)


# --------------------------------------------------------------- intensities

def normalisation_keys(name: str, stats: Intensities) -> dict[str, Planned]:
    """The intensity keys of one image section (module docstring)."""
    p = stats.percentiles
    seen = (f"sampled: 1st percentile {fmt(p[1])}, median {fmt(p[50])}, 99th "
            f"{fmt(p[99])}; {100 * stats.below_air:.0f} % below {AIR_HU:g}; "
            f"{'integer' if stats.integer_valued else 'non-integer'} values")
    if ct_like(p, stats.below_air, stats.integer_valued):
        f = stats.foreground_percentiles
        why = f"[{name}] is a CT in HU ({seen})"
        return {
            "normalisation": Planned("zscore", f"{why}: z-scored in the body after clipping"),
            "foreground_type": Planned("threshold", f"the body of a CT: above {AIR_HU:g} HU"),
            "foreground_threshold": Planned(AIR_HU, "air is -1000 HU, soft tissue about 0"),
            "percentile_clip": Planned((0.5, 99.5), (
                f"clip each CT to its body's 0.5 and 99.5 percentiles (nnU-Net's CT rule; "
                f"over the sample {fmt(f[0.5])} to {fmt(f[99.5])} HU) before the z-score")),
        }
    f = stats.foreground_percentiles
    why = f"[{name}] is not a CT in HU ({seen}): an MR or another image"
    return {
        "normalisation": Planned("zscore", f"{why}: z-scored in its foreground, as nnU-Net "
                                            "does for MR"),
        "foreground_type": Planned("otsu", (
            f"Otsu's threshold separates the foreground from the background (its sampled "
            f"foreground: 1st to 99th percentile {fmt(f[1])} to {fmt(f[99])})")),
    }


# ---------------------------------------------------------------------- tasks

def segmentation_classes(task: str, section: str, labels: Labels) -> Planned:
    """``num_classes`` from the label values: 0 .. the largest; a DataError when values
    are negative or leave gaps (sfg has no key that maps label values)."""
    values = sorted(labels.counts)
    shares = labels.fractions()
    listing = ", ".join(f"{v}: {100 * shares[v]:.2g} %" for v in values[:12])
    bad = [v for v in values if v < 0]
    gaps = sorted(set(range(0, max(values) + 1)) - set(values) - {0}) if values else []
    if bad or gaps or not values:
        first = (bad or [v for v in values if v > gaps[0]] or values)[0] if values else None
        example = labels.example_file.get(first, "?")
        problem = (f"negative values {bad}" if bad
                   else f"values with gaps (missing {', '.join(map(str, gaps[:10]))})")
        raise DataError(
            f"[TASK {task}] target [{section}] holds label values {values[:20]}: {problem}, "
            f"e.g. the value {first} in {example!r}. A segmentation task's classes are 0, "
            "1, ..., num_classes - 1, and no [TASK] key maps other values onto them: "
            "relabel the files to consecutive values 0, 1, 2, ... (keeping 0 for the "
            "background), then run sfg_plan again.")
    if len(values) < 2 and values[-1] == 0:
        raise DataError(
            f"[TASK {task}] target [{section}] holds only the value 0 in the "
            f"{len(labels.example_file) and 'sampled'} files (e.g. "
            f"{labels.example_file[0]!r}): nothing to segment. Check the filters of "
            f"[{section}].")
    return Planned(max(values) + 1, f"labels 0..{max(values)} in the sample (voxels: "
                                    f"{listing})")


def regression_scaling(values: Values) -> tuple[Planned, Planned]:
    """``target_shift`` and ``target_scale``: the centre and half-width of the target's
    1-99 percentile range, to two significant digits."""
    low, high = values.percentiles[1], values.percentiles[99]
    if not high > low:
        low, high = values.minimum, values.maximum
    shift = _two_digits((low + high) / 2)
    scale = _two_digits(max((high - low) / 2, 1e-6)) or 1.0
    where = f" inside [{values.in_mask}]" if values.in_mask else ""
    seen = (f"the target{where}: 1st percentile {fmt(values.percentiles[1])}, 99th "
            f"{fmt(values.percentiles[99])}")
    return (Planned(shift, f"{seen}: the network learns (y - {fmt(shift)}) / {fmt(scale)}, "
                           "about -1..1"),
            Planned(scale, "half the target's 1-99 percentile range"))


def _two_digits(number: float) -> float:
    if number == 0 or not math.isfinite(number):
        return 0.0
    digits = 1 - int(math.floor(math.log10(abs(number))))
    return float(round(number, digits))


def classification_classes(task: str, section: str, values: Values) -> Planned:
    if not values.integer_valued or values.minimum < 0:
        raise DataError(
            f"[TASK {task}] target [{section}] holds values from {fmt(values.minimum)} to "
            f"{fmt(values.maximum)}, not class labels 0, 1, 2, ...: relabel its column, or "
            "make the task a regression task.")
    return Planned(max(2, int(values.maximum) + 1),
                   f"class labels 0..{int(values.maximum)} in [{section}]")


def choose_sampler(task: str, section: str, labels: Labels) -> tuple[str, str]:
    shares = labels.fractions()
    foreground = {v: s for v, s in shares.items() if v != 0}
    if not foreground:
        return "uniform", "no foreground label in the sample"
    rarest = min(foreground, key=foreground.get)
    share = foreground[rarest]
    if share < RARE_CLASS:
        return "balanced", (f"class {rarest} of [TASK {task}] holds {100 * share:.2g} % of "
                            f"the voxels (less than {100 * RARE_CLASS:g} %): windows are "
                            "centred on each class equally often")
    return "uniform", (f"every class of [TASK {task}] holds at least {100 * share:.2g} % of "
                       "the voxels: uniform windows see them all")


# --------------------------------------------------------------- the network

def stages_of(network: str) -> tuple[StageSpec, ...]:
    return NETWORK_STAGES.get(network, HIGHRES_STAGES)


def receptive_radius(stages: Sequence[StageSpec], kernel_size: int = 3) -> int:
    """Voxels the output at a voxel sees on each side: each 3x3x3 convolution at
    dilation d adds d voxels (times the stride of the pooling before it); a stage is a
    block (dilation 1) and two convolutions per residual unit."""
    radius, jump = 0, 1
    half = (kernel_size - 1) // 2
    for stage in stages:
        radius += half * jump
        radius += 2 * stage.residual_units * half * stage.dilation_rate * jump
        if stage.pool:
            radius += jump // 2  # a 2x2 pooling window
            jump *= 2
    return radius


def activation_bytes(stages: Sequence[StageSpec], layer_scale: float, columns: int = 1) -> int:
    """Bytes per window voxel of a training step: float32 x `TENSORS_PER_CHANNEL` x the
    channels of every convolution (the widths of the stages' blocks and residual units,
    ``columns`` copies for cross-stitch's per-task columns). Pooled stages count what
    their resolution keeps."""
    channels, scale = 0.0, 1.0
    for stage in stages:
        width = max(1, round(stage.filters * layer_scale))
        channels += scale * width * (1 + 2 * stage.residual_units)
        if stage.pool:
            scale /= 8
    return int(math.ceil(4 * TENSORS_PER_CHANNEL * channels * columns))


def training_flops(stages: Sequence[StageSpec], layer_scale: float, two_d: bool,
                   columns: int = 1, in_channels: int = 1) -> int:
    """Floating-point operations per window voxel of a training step: every convolution's
    multiply-adds (3x3 or 3x3x3 taps x input x output channels), two operations each,
    three times (the forward pass and the two products of the backward pass). Pooled
    stages count what their resolution keeps."""
    taps = 9 if two_d else 27
    macs, scale, previous = 0.0, 1.0, in_channels
    for stage in stages:
        width = max(1, round(stage.filters * layer_scale))
        macs += scale * taps * width * (previous + 2 * stage.residual_units * width)
        previous = width
        if stage.pool:
            scale /= 4 if two_d else 8
    return int(math.ceil(6 * macs * columns))


def compute_budget(device: str, cores: int) -> tuple[float, str]:
    """Floating-point operations a training step may take (``inf`` off a CPU), and why."""
    if device != "cpu":
        return math.inf, ""
    flops = CPU_STEP_SECONDS * CPU_FLOPS_PER_CORE * cores
    return flops, (f"about {CPU_STEP_SECONDS:g} s a step on this machine's {cores} "
                   f"core(s) at {CPU_FLOPS_PER_CORE / 1e9:g} GFLOP/s each")


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pooling_divisor(stages: Sequence[StageSpec]) -> int:
    return 2 ** sum(1 for stage in stages if stage.pool)


def parse_device(text: str) -> tuple[str, float | None]:
    """``cpu`` -> ("cpu", None); ``gpu:24`` -> ("gpu", 24.0) (the GPU's memory in GB)."""
    kind, _, size = text.strip().lower().partition(":")
    if kind == "cpu" and not size:
        return "cpu", None
    if kind == "gpu":
        try:
            gigabytes = float(size)
        except ValueError:
            gigabytes = -1.0
        if gigabytes > 0:
            return "gpu", gigabytes
    raise ConfigError(f"Invalid value for argument `--device`. Expected cpu, or gpu:NN with "
                      f"NN the GPU's memory in GB (e.g. gpu:24). Received --device={text}.")


def memory_budget(device: str, gpu_gb: float | None, memory_gb: float | None,
                  available: int) -> tuple[int, str]:
    """Bytes the training activations may take (module docstring), and why."""
    if memory_gb is not None:
        total, source = memory_gb * 2 ** 30, f"--memory-gb {fmt(memory_gb)}"
    elif device == "gpu":
        total, source = gpu_gb * 2 ** 30, f"a GPU of {fmt(gpu_gb)} GB"
    else:
        total, source = available, (f"{available / 2 ** 30:.1f} GiB available on this "
                                    "machine (/proc/meminfo)")
    share = BUDGET_SHARE[device]
    return int(total * share), f"{100 * share:g} % of {source}"


@dataclass(frozen=True)
class WindowPlan:
    window: tuple[int, int, int]
    batch: int
    reason: str
    batch_reason: str
    fits: bool


def choose_window(smallest: Sequence[int], pixdim: Sequence[float], two_d: bool,
                  budget: int, bytes_per_voxel: int, divisor: int = 1,
                  dataset_voxels: float = math.inf, step_voxels: float = math.inf,
                  step_reason: str = "") -> WindowPlan:
    """The window and batch of the module docstring. ``smallest``: the smallest
    resampled volume per axis; ``step_voxels``: the most window voxels a step may hold
    (the arithmetic budget of a CPU, ``step_reason``)."""
    step = max(WINDOW_STEP, divisor)
    cap = WINDOW_CAP[2 if two_d else 3]
    axes = (0, 1) if two_d else (0, 1, 2)

    def start(size: int) -> int:
        size = min(int(size), cap)
        return max(step, size // step * step) if size >= step else (
            divisor * math.ceil(size / divisor) if divisor > 1 else size)

    window = [start(n) for n in smallest]
    if two_d:
        window[2] = 1
    minimum = [min(step, w) for w in window]
    target_batch = 2

    def cost(w, batch=1):
        return int(np.prod(w)) * bytes_per_voxel * batch

    def too_large(w) -> bool:
        batch = 1 if two_d else target_batch
        return cost(w, target_batch) > budget or int(np.prod(w)) * batch > step_voxels

    shrunk = False
    while too_large(window):
        extents = [window[a] * pixdim[a] if window[a] > minimum[a] else -1 for a in axes]
        axis = int(np.argmax(extents))
        if extents[axis] < 0:
            break
        window[axis] = max(minimum[axis], (window[axis] - step) // step * step)
        shrunk = True
    fits = cost(window, 1) <= budget
    if two_d:
        share = 0.05 * dataset_voxels / max(int(np.prod(window)), 1)
        cap_batch = max(2, int(share)) if math.isfinite(share) else 64
        fit = int(budget // max(cost(window), 1))
        in_time = step_voxels / max(int(np.prod(window)), 1)
        in_time = int(in_time) if math.isfinite(in_time) else 64
        batch = int(max(1, min(64, cap_batch, fit, in_time)))
        batch_reason = (f"as many 2D windows as fit ({fit}), at most 64 and 5 % of the "
                        f"dataset's voxels ({cap_batch} windows)")
        if math.isfinite(step_voxels):
            batch_reason += f" and {in_time} in {step_reason}"
    else:
        batch = 2 if cost(window, 2) <= budget else 1
        batch_reason = ("2 windows a step (nnU-Net's 3D batch)" if batch == 2 else
                        "1: two of the smallest windows do not fit the budget")
    need = cost(window, batch)
    reason = (f"{'shrunk to fit' if shrunk else 'the smallest volume'} "
              f"({'x'.join(map(str, smallest))} voxels at pixdim; at most {cap} per axis, "
              f"multiples of {step}): a step of {batch} window(s) needs about "
              f"{need / 2 ** 20:.0f} MiB of activations ({bytes_per_voxel} bytes per "
              f"voxel) of the {budget / 2 ** 20:.0f} MiB budget")
    if math.isfinite(step_voxels):
        reason += (f", and at most {step_voxels / 1000:.0f} k window voxels a step for "
                   f"{step_reason}")
    return WindowPlan(tuple(int(w) for w in window), batch, reason, batch_reason, fits)


def choose_border(window: Sequence[int], radius: int) -> Planned:
    border = tuple(min(radius, w // 8) if w > 1 else 0 for w in window)
    return Planned(border, (f"the network sees {radius} voxels on each side; an eighth of "
                            f"the window, at most that, is dropped or down-weighted at each "
                            "edge (less than half the window, as required)"))


# ------------------------------------------------------------------ schedule

def split_fractions(count: int) -> tuple[str, str, str]:
    """``exclude_fraction_for_validation`` and ``_inference`` as config text, and why."""
    if count == 1:
        return "0", "0", "one subject: it trains and is inferred; no held-out metric"
    if count == 2:
        return "0", "1/2", "two subjects: one trains, one is held out for inference"
    if count < 10:
        return (f"1/{count}", f"1/{count}",
                f"{count} subjects: one for validation, one for inference, the rest train")
    return "0.1", "0.1", f"{count} subjects: 10 % for validation, 10 % for inference"


def choose_max_iter(train_voxels: float, window: Sequence[int], batch: int) -> Planned:
    per_pass = train_voxels / (float(np.prod(window)) * batch)
    raw = PASSES * per_pass
    value = int(min(MAX_ITER, max(MIN_ITER, math.ceil(raw / 100) * 100)))
    return Planned(value, (f"{PASSES} passes over the training volumes ({per_pass:.1f} "
                           f"steps of {batch} window(s) each cover them once), within "
                           f"{MIN_ITER}..{MAX_ITER}"))


def cpu_threads() -> int:
    return int(min(8, max(1, (os.cpu_count() or 2) // 2)))
