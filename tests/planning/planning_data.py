"""Small real NIfTI datasets for the planner's tests, written with nibabel into tmp_path."""

import pathlib

import nibabel as nib
import numpy as np


def write_nifti(path: pathlib.Path, data, spacing=(1.0, 1.0, 1.0), affine=None,
                dtype=None) -> pathlib.Path:
    """``data`` as a NIfTI file; the affine is ``diag(spacing)`` unless given."""
    data = np.asarray(data)
    if dtype is not None:
        data = data.astype(dtype)
    if affine is None:
        affine = np.diag([*spacing, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def body(shape, fraction=0.35):
    """A centred ellipsoid filling about ``fraction`` of the grid (boolean)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = fraction ** (1 / 3) * 0.9
    return sum(g ** 2 for g in grids) < radius ** 2


def ct_volume(shape, seed=0):
    """int16 Hounsfield units: air -1000 around a soft-tissue body (~40 HU) with a bone."""
    rng = np.random.default_rng(seed)
    inside = body(shape)
    ct = np.where(inside, 40 + rng.normal(0, 20, shape), -1000 + rng.normal(0, 5, shape))
    bone = body(shape, 0.02)
    ct[bone] = 900
    return np.round(ct).astype(np.int16)


def mr_volume(shape, seed=0):
    """uint16 MR-like intensities: a dark background, a bright body."""
    rng = np.random.default_rng(seed)
    inside = body(shape)
    mr = np.where(inside, 600 + rng.normal(0, 60, shape), 5 + np.abs(rng.normal(0, 5, shape)))
    return np.clip(np.round(mr), 0, None).astype(np.uint16)


def minimal_config(folder: pathlib.Path, sections: dict[str, dict]) -> pathlib.Path:
    text = "\n".join(f"[{header}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
                     for header, keys in sections.items())
    path = folder / "minimal.ini"
    path.write_text(text)
    return path

