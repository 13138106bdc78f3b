"""Copy the MNI152 2009a template and tissue maps that nilearn ships, and label its tissues.

    python scripts/extract_mni.py --out data/mni

A real-data check for the multi-task configs (tissue segmentation plus grey-matter
probability regression) without a download: nilearn's wheel carries the skull-stripped
ICBM152 2009a nonlinear symmetric T1 template and its grey- and white-matter probability
maps (1 mm, 197 x 233 x 189). This script writes into ``--out``:

- ``mni152_t1.nii.gz``, ``mni152_gm.nii.gz``, ``mni152_wm.nii.gz``: byte copies of
  nilearn's files (uint8; a probability map stores probability x 255);
- ``mni152_tissue.nii.gz``: uint8 labels on the same grid (same shape and affine):
  0 background, 1 CSF / other brain, 2 grey matter, 3 white matter.

Label rule. The brain is where the T1 template exceeds 0.2 of its maximum (the rule of
nilearn's ``load_mni152_brain_mask``), holes filled. Inside it, with p_gm and p_wm the maps
divided by their maxima (as nilearn's loaders do) and p_other = max(0, 1 - p_gm - p_wm),
a voxel takes the class of the largest of (p_other, p_gm, p_wm); a tie goes to the first.

The files stay out of git: they are nilearn's (see its licence) and the script makes them.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from sfg_app.errors import DataError, SFGError
from sfg_app.io.atomic import atomic_path

SOURCE_PATTERN = "mni_icbm152_{kind}_tal_nlin_sym_09a*.nii.gz"
OUTPUT_NAMES = {"t1": "mni152_t1.nii.gz", "gm": "mni152_gm.nii.gz", "wm": "mni152_wm.nii.gz"}
TISSUE_NAME = "mni152_tissue.nii.gz"
TISSUE_LABELS = {0: "background", 1: "csf_other", 2: "grey_matter", 3: "white_matter"}
BRAIN_THRESHOLD = 0.2


def nilearn_templates() -> dict[str, Path]:
    """The installed nilearn's template files by kind (t1, gm, wm), found without
    importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SFGError(
            "The package `nilearn` is not installed; it ships the MNI152 template that "
            "this script copies. Install it with `pip install nilearn` and run the "
            "script again.")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    found = {}
    for kind in OUTPUT_NAMES:
        matches = sorted(folder.glob(SOURCE_PATTERN.format(kind=kind)))
        if not matches:
            raise DataError(
                f"The installed nilearn has no file matching "
                f"{SOURCE_PATTERN.format(kind=kind)!r} in {folder}. Expected the MNI152 "
                "2009a templates that recent nilearn releases ship; upgrade with "
                "`pip install -U nilearn`.")
        found[kind] = matches[0]
    return found


def tissue_labels(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Labels 0..3 from the template and its probability maps (rule in the module doc)."""
    t1, gm, wm = (np.asarray(a, dtype=np.float64) for a in (t1, gm, wm))
    brain = ndimage.binary_fill_holes(t1 > BRAIN_THRESHOLD * t1.max())
    p_gm = gm / gm.max()
    p_wm = wm / wm.max()
    p_other = np.clip(1 - p_gm - p_wm, 0, 1)
    classes = 1 + np.argmax(np.stack([p_other, p_gm, p_wm]), axis=0)
    return np.where(brain, classes, 0).astype(np.uint8)


def extract(out) -> dict[str, Path]:
    """Copy the templates into ``out`` and write the tissue labels; returns the paths by
    kind (t1, gm, wm, tissue)."""
    out = Path(out)
    sources = nilearn_templates()
    written = {kind: out / name for kind, name in OUTPUT_NAMES.items()}
    written["tissue"] = out / TISSUE_NAME
    for kind, source in sources.items():
        with atomic_path(written[kind]) as temporary:
            shutil.copyfile(source, temporary)
    images = {kind: nib.load(path) for kind, path in sources.items()}
    labels = tissue_labels(*(np.asarray(images[k].dataobj) for k in ("t1", "gm", "wm")))
    header = images["t1"].header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    tissue = nib.Nifti1Image(labels, images["t1"].affine, header)
    with atomic_path(written["tissue"]) as temporary:
        nib.save(tissue, temporary)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/mni"),
                        help="folder to write into (default data/mni)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        written = extract(args.out)
    except SFGError as error:
        print(f"extract_mni: {error}", file=sys.stderr)
        return 2
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
