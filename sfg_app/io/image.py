"""The in-memory image of the data engine: channels-last voxels plus the geometry to write them back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sfg_app.io import geometry


@dataclass
class Image:
    """One image file read into memory.

    ``data`` is ``(X, Y, Z, C)``: three spatial axes in the file's voxel order (a 2D image
    has ``Z = 1``) and channels last (the 4th NIfTI axis, NIfTI's 5th-dimension vectors,
    SimpleITK vector pixels, RGB). Integer files stay integer; scaled or float files are
    float32. ``affine`` maps voxel indices to RAS+ mm. ``header`` is what the reader had
    (a nibabel header, or a dict of SimpleITK metadata); ``write_image(..., like=image)``
    uses it and ``metadata`` to write outputs in the same layout:

    - ``loader``: the reader's registered name;
    - ``spatial_ndim``: 2 for a 2D file (written back as 2D), else 3;
    - ``disk_shape``, ``disk_dtype``: the array as stored, before channels were moved last;
    - ``vector``: True when channels were a vector dimension (NIfTI 5th dim, ITK vector).
    """

    data: np.ndarray
    affine: np.ndarray
    path: str
    header: Any = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.data.ndim != 4 or self.affine.shape != (4, 4):
            raise ValueError(f"An Image needs data (X, Y, Z, C) and a 4x4 affine; got data "
                             f"{self.data.shape} and affine {self.affine.shape} for {self.path}.")

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape[:3])

    @property
    def num_channels(self) -> int:
        return int(self.data.shape[3])

    @property
    def spacing(self) -> np.ndarray:
        return geometry.spacing(self.affine)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        return geometry.axcodes(self.affine)

    @property
    def info(self) -> ImageInfo:
        return ImageInfo(path=self.path, shape=self.spatial_shape, affine=self.affine,
                         header=self.header, metadata=dict(self.metadata))


@dataclass(frozen=True)
class ImageInfo:
    """An Image without its voxels: enough to write an output in its geometry and layout
    (``write_image(path, data, info.affine, like=info)``) long after the voxels are gone."""

    path: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    header: Any = None
    metadata: dict = field(default_factory=dict)
