"""``write_image``: an (X, Y, Z, C) array and its affine to a file, atomically.

NIfTI goes through nibabel, every other single-file format through SimpleITK. With
``like`` (the input ``Image`` or its ``ImageInfo``) the output keeps the input's layout:
2D stays 2D, a vector image stays a vector image, a NIfTI keeps its header (qform/sform
codes, units, descriptions) and, when the affine is the input's own, its qform and sform
exactly as they were, disagreements included. The SimpleITK metadata of ``like`` is not
copied (keys such as the NRRD space would contradict the new geometry).
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from sfg_app.errors import DataError
from sfg_app.io.atomic import atomic_path
from sfg_app.io.formats import DETACHED_EXTENSIONS, is_nifti, split_extension
from sfg_app.io.readers import LPS_TO_RAS, VECTOR_INTENTS

_SMALL_INTEGERS = (np.uint8, np.int16, np.int32)


def write_image(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray,
                like=None, dtype=None) -> str:
    """Write ``data`` (X, Y, Z, C), or (X, Y, Z), with ``affine`` to ``path``; returns the path.

    ``dtype`` defaults to float32 for float data and, for integer data, to the smallest of
    uint8 / int16 / int32 that holds its values (int32 labels become uint8 files). Float data written as integers is rounded; values the
    integer type cannot hold are a DataError, never wrapped around.
    """
    path = os.fspath(path)
    data = np.asarray(data)
    if data.ndim == 3:
        data = data[..., None]
    affine = np.asarray(affine, dtype=np.float64)
    if data.ndim != 4 or affine.shape != (4, 4):
        raise ValueError(f"write_image needs data (X, Y, Z[, C]) and a 4x4 affine; got data "
                         f"{data.shape} and affine {affine.shape} for {path}.")
    ext = split_extension(path)[1]
    if ext in DETACHED_EXTENSIONS:
        raise DataError(
            f"Cannot write {path!r}: the {ext} format keeps header and voxels in two files, "
            "which cannot be written atomically. Use a single-file format: .nii.gz, .nii, "
            ".mha or .nrrd.")
    data = _cast(data, _output_dtype(data, dtype), path)
    try:
        with atomic_path(path) as temporary:
            if is_nifti(path):
                _write_nifti(temporary, data, affine, like)
            else:
                _write_simpleitk(temporary, data, affine, like)
    except RuntimeError as err:  # SimpleITK's only exception type
        raise DataError(f"SimpleITK cannot write {path!r}: {' '.join(str(err).split())[:600]}. "
                        "Use .nii.gz, .mha or .nrrd.") from err
    return path


def _output_dtype(data: np.ndarray, dtype) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    if data.dtype == np.bool_:
        return np.dtype(np.uint8)
    if data.dtype.kind == "f":
        return np.dtype(np.float32)
    if data.dtype.kind in "iu" and data.dtype.itemsize > 1:
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
        for candidate in _SMALL_INTEGERS:
            if np.iinfo(candidate).min <= low and high <= np.iinfo(candidate).max:
                return np.dtype(candidate)
    return data.dtype


def _cast(data: np.ndarray, dtype: np.dtype, path: str) -> np.ndarray:
    if dtype.kind not in "iu" or data.dtype.kind not in "fc":
        return data.astype(dtype, copy=False)
    data = np.rint(data)
    info = np.iinfo(dtype)
    if data.size and (not np.isfinite(data).all() or data.min() < info.min
                      or data.max() > info.max):
        raise DataError(
            f"Cannot write {path!r} as {dtype}: the values span [{np.nanmin(data)}, "
            f"{np.nanmax(data)}] (or are not finite), outside {dtype}'s range [{info.min}, "
            f"{info.max}]. Write it as float32 (dtype=None) or a wider integer type.")
    return data.astype(dtype)


def _two_d(data: np.ndarray, like) -> bool:
    """Whether to write a 2D file: the input was 2D and the output is one slice."""
    metadata = getattr(like, "metadata", None) or {}
    return metadata.get("spatial_ndim") == 2 and data.shape[2] == 1


def _write_nifti(path: str, data: np.ndarray, affine: np.ndarray, like) -> None:
    reference = getattr(like, "header", None)
    reference = reference if isinstance(reference, nib.Nifti1Header) else None
    metadata = getattr(like, "metadata", None) or {}
    channels = data.shape[3]
    if _two_d(data, like) and channels == 1:
        array = data[:, :, 0, 0]
    elif channels > 1 and metadata.get("vector"):
        array = data[:, :, :, None, :]
    elif channels > 1 or tuple(metadata.get("disk_shape", ()))[3:] == (1,):
        array = data
    else:
        array = data[..., 0]
    image_class = nib.Nifti2Image if isinstance(reference, nib.Nifti2Header) else nib.Nifti1Image
    header = reference.copy() if reference is not None else None
    image = image_class(array, affine, header=header, dtype=array.dtype)
    header = image.header
    header["cal_min"], header["cal_max"] = 0, 0
    if array.ndim == 5:
        header.set_intent("vector")
    elif header.get_intent()[0] in VECTOR_INTENTS:
        header.set_intent("none")
    keep_geometry = (reference is not None and getattr(like, "affine", None) is not None
                     and np.array_equal(affine, np.asarray(like.affine)))
    if not keep_geometry:
        _set_nifti_affine(header, affine, reference)
    if reference is None:
        header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def _set_nifti_affine(header: nib.Nifti1Header, affine: np.ndarray, reference) -> None:
    """sform holds the affine exactly; qform too when the affine has no shear."""
    sform_code = int(reference["sform_code"]) if reference is not None else 0
    qform_code = int(reference["qform_code"]) if reference is not None else 1
    header.set_sform(affine, code=sform_code or 2)
    zooms = np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))
    rotation = affine[:3, :3] / zooms
    orthogonal = np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
    header.set_qform(affine, code=qform_code if orthogonal else 0, strip_shears=True)


def _write_simpleitk(path: str, data: np.ndarray, affine: np.ndarray, like) -> None:
    lps = LPS_TO_RAS @ affine
    zooms = np.sqrt(np.sum(lps[:3, :3] ** 2, axis=0))
    direction = lps[:3, :3] / zooms
    channels = data.shape[3]
    # A 2D MetaImage/NRRD has no Z: only a grid lying in the z = 0 plane fits in it.
    if _two_d(data, like) and np.allclose([*affine[2, :2], *affine[:2, 2], affine[2, 3]], 0):
        array, n = data[:, :, 0, :].transpose(1, 0, 2), 2
    else:
        array, n = data.transpose(2, 1, 0, 3), 3
    if channels == 1:
        array = array[..., 0]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=channels > 1)
    image.SetSpacing(zooms[:n].tolist())
    image.SetOrigin(lps[:n, 3].tolist())
    image.SetDirection(direction[:n, :n].ravel().tolist())
    sitk.WriteImage(image, path)
