"""File names of images: which extensions are images, and which library reads them.

Compound extensions (``.nii.gz``) are one extension here, so that a subject id made from
``sub01_t1.nii.gz`` is ``sub01_t1`` and a temporary file keeps the format of its target.
"""

from __future__ import annotations

import os

NIFTI_EXTENSIONS = (".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz")
SIMPLEITK_EXTENSIONS = (".mha", ".mhd", ".nrrd", ".nhdr", ".dcm", ".gipl", ".gipl.gz",
                        ".vtk", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
# A second file of a pair (.img of .hdr, .raw of .mhd) is never an image of its own.
SEARCHABLE_EXTENSIONS = tuple(
    ext for ext in NIFTI_EXTENSIONS + SIMPLEITK_EXTENSIONS
    if not ext.startswith(".img") and ext != ".dcm")
# Formats whose header names a second data file: renaming a temporary file would leave
# the header pointing at the temporary data file, so they are never written.
DETACHED_EXTENSIONS = (".hdr", ".hdr.gz", ".img", ".img.gz", ".mhd", ".nhdr")


def split_extension(path: str | os.PathLike) -> tuple[str, str]:
    """``(stem, extension)`` of a file name, the extension lower case and compound-aware."""
    name = os.path.basename(os.fspath(path).rstrip(os.sep))
    lower = name.lower()
    for ext in sorted(NIFTI_EXTENSIONS + SIMPLEITK_EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext):
            return name[:-len(ext)], lower[-len(ext):]
    stem, ext = os.path.splitext(name)
    return stem, ext.lower()


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether nibabel is the natural reader and writer of ``path`` (NIfTI or Analyze)."""
    return split_extension(path)[1] in NIFTI_EXTENSIONS
