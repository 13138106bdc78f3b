"""Image readers (registered loaders ``nibabel`` and ``simpleitk``) and ``load_image``.

Each reader turns one file (or a DICOM series folder) into an ``Image``: channels last,
native byte order, float32 for scaled or float data, integer files left integer, and the
affine in RAS+ mm. Every failure to read becomes a DataError naming the path and the
reader's own reason, because a corrupt file deep in a dataset is otherwise a riddle.
"""

from __future__ import annotations

import os
import zlib

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import SpatialImage

from sfg_app.errors import DataError
from sfg_app.io.formats import is_nifti
from sfg_app.io.geometry import affine_problem
from sfg_app.io.image import Image
from sfg_app.registry import LOADERS

# nibabel and the gzip/zlib modules below it report broken files through all of these.
_NIBABEL_FAILURES = (OSError, EOFError, ValueError, zlib.error, ImageFileError)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
VECTOR_INTENTS = ("vector", "rgb vector", "displacement vector")


def _unreadable(path: str, reader: str, err: BaseException) -> DataError:
    reason = " ".join(str(err).split())
    if len(reason) > 600:
        reason = reason[:600] + " ..."
    return DataError(
        f"Cannot read the image {path!r} with {reader}: {type(err).__name__}: {reason}. "
        "The file may be truncated or corrupt (copy or export it again), or not an image "
        "of a supported format (try the other `loader`: nibabel or simpleitk).")


def _voxels(data: np.ndarray, path: str) -> np.ndarray:
    """Native byte order; float32 for any float or scaled data; complex refused."""
    if np.iscomplexobj(data):
        raise DataError(f"The image {path!r} holds complex voxels ({data.dtype}); expected real "
                        "values. Save the magnitude (or real and imaginary parts as channels).")
    if data.dtype.kind == "f":
        return data.astype(np.float32, copy=False)
    if not data.dtype.isnative:
        return data.astype(data.dtype.newbyteorder("="))
    return data


#: Copies of a volume that reading and preprocessing hold at once (the file's array, its
#: float32 form, the resampled and the normalised arrays).
WORKING_COPIES = 4


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable of Linux; the free
    physical pages elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(path: str, shape, itemsize: int) -> None:
    """A DataError, before the voxels are read, when a volume of ``shape`` would not fit
    in the available memory with the copies preprocessing makes: a file of a few MB can
    hold a volume of many GB (compressed), and would take the machine down instead."""
    voxels = int(np.prod([int(n) for n in shape], dtype=np.float64))
    needed = voxels * max(int(itemsize), 4) * WORKING_COPIES
    available = available_memory()
    if needed > available:
        raise DataError(
            f"The image {path!r} holds {' x '.join(str(int(n)) for n in shape)} voxels: "
            f"reading and preprocessing it takes about {needed / 2 ** 30:.1f} GiB, more "
            f"than the {available / 2 ** 30:.1f} GiB of memory available. Crop it to the "
            "region of interest, or resample it to coarser voxels with another tool first.")


class NibabelReader:
    """NIfTI-1/2 and Analyze (and any other spatial format nibabel reads) through nibabel.

    The affine is nibabel's choice (sform when its code is set, else qform, else the
    zooms), which settles files whose sform and qform disagree. Scaling (scl_slope /
    scl_inter) is applied by nibabel; a NaN or zero slope means "no scaling".
    """

    name = "nibabel"

    def read(self, path: str) -> Image:
        path = os.fspath(path)
        try:
            image = nib.load(path, mmap=False)  # voxels in memory, the file closed
            if not isinstance(image, SpatialImage):
                raise ImageFileError(f"nibabel reads it as a {type(image).__name__}, which is "
                                     "not an image on a voxel grid")
        except _NIBABEL_FAILURES as err:
            raise _unreadable(path, "nibabel", err) from err
        check_memory(path, image.shape, image.get_data_dtype().itemsize)
        try:
            data = np.asanyarray(image.dataobj)
        except _NIBABEL_FAILURES as err:
            raise _unreadable(path, "nibabel", err) from err
        disk_shape = tuple(int(n) for n in data.shape)
        data = self._channels_last(data, path)
        if data.dtype.names:  # RGB / RGBA NIfTI: one structured voxel -> channels
            if data.shape[3] != 1:
                raise DataError(f"The image {path!r} has RGB voxels and {data.shape[3]} volumes; "
                                "expected a single RGB volume.")
            data = np.stack([data[name][..., 0] for name in data.dtype.names], axis=-1)
        header = image.header
        intent = header.get_intent()[0] if hasattr(header, "get_intent") else "none"
        return Image(
            data=_voxels(data, path), affine=image.affine, path=path, header=header,
            metadata={"loader": self.name, "spatial_ndim": 2 if len(disk_shape) == 2 else 3,
                      "disk_shape": disk_shape, "disk_dtype": str(image.get_data_dtype()),
                      "vector": len(disk_shape) == 5 or intent in VECTOR_INTENTS})

    @staticmethod
    def _channels_last(data: np.ndarray, path: str) -> np.ndarray:
        if data.ndim == 2:
            return data[:, :, None, None]
        if data.ndim == 3:
            return data[..., None]
        if data.ndim == 4:
            return data
        if data.ndim == 5 and data.shape[3] == 1:
            return data[:, :, :, 0, :]
        raise DataError(
            f"The image {path!r} has {data.ndim} dimensions, shape {data.shape}; expected "
            "2 or 3 spatial dimensions, optionally a 4th of channels, or a 5th of vector "
            "components after a singleton 4th. Split it into one file per volume.")


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """RAS+ affine of a SimpleITK image (its first three axes; a 2D image gets Z = 1 mm)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    n = min(dim, 3)
    lps = np.eye(4)
    lps[:n, :n] = direction[:n, :n] * np.asarray(image.GetSpacing()[:n])
    lps[:n, 3] = image.GetOrigin()[:n]
    return LPS_TO_RAS @ lps


class SimpleITKReader:
    """MetaImage, NRRD, NIfTI, DICOM series (a folder) and 2D formats through SimpleITK."""

    name = "simpleitk"

    def read(self, path: str) -> Image:
        path = os.fspath(path)
        try:
            image, header = (self._read_series(path) if os.path.isdir(path)
                             else self._read_file(path))
            data = sitk.GetArrayFromImage(image)
        except RuntimeError as err:
            raise _unreadable(path, "SimpleITK", err) from err
        dim, vector = image.GetDimension(), image.GetNumberOfComponentsPerPixel() > 1
        disk_shape = tuple(image.GetSize()) + ((data.shape[-1],) if vector else ())
        if dim not in (2, 3, 4) or (dim == 4 and vector):
            raise DataError(
                f"The image {path!r} has {dim} dimensions with "
                f"{image.GetNumberOfComponentsPerPixel()} components per voxel; expected 2 or 3 "
                "spatial dimensions (scalar or vector voxels), or 4 dimensions of scalar voxels "
                "(the 4th read as channels).")
        data = data.transpose(tuple(reversed(range(dim))) + ((dim,) if vector else ()))
        if dim == 2:
            data = data[:, :, None] if vector else data[:, :, None, None]
        elif dim == 3 and not vector:
            data = data[..., None]
        return Image(
            data=_voxels(data, path), affine=sitk_affine(image), path=path, header=header,
            metadata={"loader": self.name, "spatial_ndim": 2 if dim == 2 else 3,
                      "disk_shape": disk_shape, "disk_dtype": str(data.dtype),
                      "vector": vector})

    @staticmethod
    def _read_file(path: str) -> tuple[sitk.Image, dict]:
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        components = reader.GetNumberOfComponents()
        check_memory(path, tuple(reader.GetSize()) + ((components,) if components > 1 else ()),
                     np.dtype(sitk.GetArrayViewFromImage(
                         sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(),
                                    reader.GetNumberOfComponents())).dtype).itemsize)
        image = reader.Execute()
        return image, {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}

    @staticmethod
    def _read_series(path: str) -> tuple[sitk.Image, dict]:
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(path)
        if len(series) != 1:
            found = f"{len(series)} series ({', '.join(series)})" if series else "no DICOM series"
            raise DataError(f"The folder {path!r} was read as a DICOM series and holds {found}; "
                            "expected exactly one. Put each series in its own folder.")
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(path, series[0]))
        reader.MetaDataDictionaryArrayUpdateOn()
        image = reader.Execute()
        return image, {key: reader.GetMetaData(0, key) for key in reader.GetMetaDataKeys(0)}


def load_image(path: str | os.PathLike, loader: str = "auto") -> Image:
    """Read ``path`` with the registered ``loader``; ``auto`` picks nibabel for NIfTI and
    Analyze files and SimpleITK for the rest (a folder is a DICOM series)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        folder = os.path.dirname(os.path.abspath(path))
        hint = ("" if os.path.isdir(folder)
                else f" (its folder {folder!r} does not exist either)")
        raise DataError(f"The image file {path!r} does not exist{hint}. Check the path, the "
                        "`path_to_search` folders or the paths in the `csv_file`.")
    if loader == "auto":
        loader = "nibabel" if is_nifti(path) and os.path.isfile(path) else "simpleitk"
    image = LOADERS.get(loader)().read(path)
    problem = affine_problem(image.affine)
    if problem:
        raise DataError(
            f"The image {path!r} has an affine that cannot map its voxels to the world: "
            f"{problem}. Affine read by {loader}:\n{np.array2string(image.affine, precision=4)}"
            "\nFix the header (NIfTI: sform/qform and pixdim; others: spacing, origin, "
            "direction), e.g. with nibabel or SimpleITK.")
    return image
