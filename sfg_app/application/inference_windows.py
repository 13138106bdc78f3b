"""How large a subject's inference windows are, and how many go through the network per call.

The networks are fully convolutional, so inference need not use the training window:
by default (`[INFERENCE] spatial_window_size` unset) each subject's window is the largest
whose network call fits `[INFERENCE] memory_limit`, by the estimate of
`inference_bytes_per_voxel`:

- per axis, the whole (padded) volume plus the border on each side (`GridPlan`'s first
  window starts at `-border`, so one window of `size + 2 * border` covers the axis), never
  less than the training window;
- while the call does not fit, the axis of largest extent (in voxels) takes one more
  window, each just large enough that that many cover the axis; no axis goes below the
  training window (a training window that does not fit is used all the same: training
  ran it);
- as many windows per call as fit the budget, at most `MAX_WINDOWS_PER_CALL` and the
  subject's windows. A 2D network's window is the whole (x, y) plane, within memory, and
  its windows per call are slices.

A network with instance normalisation (`[NETWORK] norm_layer = instance`, the default)
keeps the training window by default (`largest = False`), with as many windows per call
as fit: its statistics are taken over the window, so a larger window gives other
outputs. Measured on held-out phantoms (docs/inference.md), the whole volume in one
window moved the demo config's mean organ Dice by +0.09 to +0.20 and its synthetic-CT
MAE by +6 % to +23 %, and a 2D pair's Dice by -0.095 to +0.005: not the network that
was trained. With batch normalisation or none the outputs match the training-window
grid's where the border covers the network's reach (tests/application), and the largest
window is the default.

An explicit `[INFERENCE] spatial_window_size` (at least the training window, see
`arguments.inference_window_problem`) is used as it is, with `[NETWORK] batch_size`
windows per call as before; set to the training window it gives the outputs of the
training-window grid bit for bit.

**The estimate.** Peak resident memory of one forward pass of the traced inference call
(batch 1, CPU, oneDNN on, float32, voxel heads of 3 and 1 channels; highres3dnet one head
of 3), each size in a process of its own after the trace, minus the memory before the
call, per window voxel at windows of 32^3, 48^3 and 64^3 (2D: 256^2 and 512^2):

    network            layer_scale   bytes per window voxel   widest conv   tensors of it
    sfg_highres3dnet   0.5           711, 744, 730             32            5.5 to 5.8
    sfg_highres3dnet   1             1462, 1405, 1387          64            5.4 to 5.7
    highres3dnet       0.5           691, 744, 727             32            5.4 to 5.8
    highres3dnet       1             1249, 1454, 1392          64            4.9 to 5.7
    hard_shared        0.5 / 1       736 / 1459 at most        32 / 64       5.7
    cross_stitch       0.5 / 1       784 / 1377 at most        2 x 16 / 2 x 32  6.1 / 5.4
    sfg_highres3dnet   0.5, 2D       642, 679                  32            5.3

(norm_layer instance; batch and none gave the same at 0.5, 48^3: 739 and 745 B.) So about
5.7 float32 tensors of the widest convolution are alive at once, whatever the width (a
cross-stitch network's columns share the width between them); `INFERENCE_TENSORS` rounds
it up to 7, a margin of about a quarter for the allocator and other machines' kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sfg_app import arguments

#: float32 tensors per channel of the widest convolution alive at once in a forward pass
#: (measured 5.5 to 5.8, module docstring), rounded up.
INFERENCE_TENSORS = 7
#: At most this many windows (2D: slices) per network call.
MAX_WINDOWS_PER_CALL = 64
#: The share of the available memory the network call may take by default.
DEFAULT_MEMORY_SHARE = 0.25


def inference_bytes_per_voxel(stages, layer_scale: float, spatial_dims: int,
                              input_channels: int = 1, output_channels: int = 1) -> int:
    """Bytes one window voxel costs a forward pass: float32 x `INFERENCE_TENSORS` x the
    widest convolution (channels times the share of the window's voxels its resolution
    keeps after pooling), plus the input and the decoded outputs (counted twice: the
    network's and numpy's copies). `stages`: the network's `StageSpec`s."""
    widest, resolution = 1.0, 1.0
    for stage in stages:
        width = max(1, round(stage.filters * layer_scale))
        widest = max(widest, width * resolution)
        if stage.pool:
            resolution /= 2 ** spatial_dims
    tensors = INFERENCE_TENSORS * widest + input_channels + 2 * output_channels
    return int(math.ceil(4 * tensors))


@dataclass(frozen=True)
class WindowChoice:
    """One subject's inference windows: their size and how many go per network call."""

    window: tuple[int, int, int]
    windows_per_call: int
    reason: str


@dataclass(frozen=True)
class InferenceWindows:
    """Chooses each subject's `WindowChoice` (module docstring).

    `training_window` and `border` as the config has them; `memory_limit` in bytes, the
    budget of one network call; `bytes_per_voxel` the network's estimate
    (`inference_bytes_per_voxel`); `window` an explicit window (None: derived), run
    `batch_size` windows per call; `largest` False keeps the training window when none is
    given (instance normalisation).
    """

    training_window: tuple[int, int, int]
    border: tuple[int, int, int]
    memory_limit: int
    bytes_per_voxel: int
    window: tuple[int, int, int] | None = None
    batch_size: int = 1
    max_windows_per_call: int = MAX_WINDOWS_PER_CALL
    largest: bool = True

    def __post_init__(self):
        for name in ("memory_limit", "bytes_per_voxel", "batch_size", "max_windows_per_call"):
            arguments.positive_int(getattr(self, name), name)
        if self.window is not None:
            problem = arguments.inference_window_problem(self.window, self.training_window)
            if problem:
                raise arguments.invalid("window", tuple(self.window), problem,
                                        owner="InferenceWindows")

    @property
    def two_d(self) -> bool:
        return self.training_window[2] == 1

    def cost(self, window: Sequence[int], windows: int = 1) -> int:
        """Estimated bytes of a network call on `windows` windows of `window`."""
        return int(np.prod(window, dtype=np.int64)) * self.bytes_per_voxel * windows

    def choose(self, shape: Sequence[int]) -> WindowChoice:
        """The windows of a subject whose preprocessed volume has the spatial `shape`."""
        shape = tuple(int(s) for s in shape)
        if self.window is not None:
            return WindowChoice(tuple(self.window), self.batch_size,
                                "[INFERENCE] spatial_window_size, [NETWORK] batch_size "
                                "windows per call")
        axes = (0, 1) if self.two_d else (0, 1, 2)
        counts = [1, 1, 1]
        window = self._window(shape, counts) if self.largest else self.training_window
        while self.largest and self.cost(window) > self.memory_limit:
            shrinkable = [a for a in axes if window[a] > self.training_window[a]]
            if not shrinkable:
                break
            axis = max(shrinkable, key=lambda a: window[a])
            counts[axis] += 1
            window = self._window(shape, counts)
        grid = int(np.prod([_count(s, w, b) for s, w, b in zip(shape, window, self.border)]))
        fit = self.memory_limit // self.cost(window)
        per_call = int(max(1, min(self.max_windows_per_call, grid, fit)))
        whole = all(_count(s, w, b) == 1 for s, w, b in zip(shape, window, self.border))
        limit = f"{self.memory_limit / 2 ** 20:.0f} MiB"
        if not self.largest:
            reason = (f"the training window (instance normalisation: the window's "
                      f"statistics), as many per call as fit {limit}")
        elif whole:
            reason = f"the whole volume in one window, within {limit}"
        elif fit < 1:
            reason = f"the training window, although it needs more than {limit}"
        else:
            reason = f"the largest window within {limit}"
        return WindowChoice(window, per_call, reason)

    def _window(self, shape, counts) -> tuple[int, int, int]:
        """Per axis, the smallest window of which `counts` cover the axis (the border
        discarded on each side), at least the training window."""
        window = [max(t, -(-s // n) + 2 * b) for s, t, b, n in
                  zip(shape, self.training_window, self.border, counts)]
        if self.two_d:
            window[2] = 1
        return tuple(int(w) for w in window)


def _count(size: int, window: int, border: int) -> int:
    """Windows along an axis, as `GridSampler` plans them."""
    return max(-(-size // (window - 2 * border)), 1)
