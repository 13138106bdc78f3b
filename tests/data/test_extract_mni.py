"""scripts/extract_mni.py: the installed nilearn's MNI152 files, copied, and their tissue
labels by the documented rule."""

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sfg_app.errors import SFGError
from script_modules import load_script

REPO = Path(__file__).resolve().parents[2]
needs_nilearn = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                   reason="nilearn is not installed (pip install nilearn)")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    script = load_script("scripts/extract_mni.py")
    out = tmp_path_factory.mktemp("mni")
    assert script.main(["--out", str(out)]) == 0
    return script, out


@needs_nilearn
def test_templates_are_found_in_the_installed_nilearn():
    script = load_script("scripts/extract_mni.py")
    sources = script.nilearn_templates()
    assert set(sources) == {"t1", "gm", "wm"}
    nilearn_folder = Path(importlib.util.find_spec("nilearn").origin).parent
    for kind, path in sources.items():
        assert path.is_file() and path.is_relative_to(nilearn_folder)
        assert path.name.startswith(f"mni_icbm152_{kind}_tal_nlin_sym_09a")


@needs_nilearn
def test_copies_are_byte_identical(extracted):
    script, out = extracted
    for kind, source in script.nilearn_templates().items():
        assert (out / script.OUTPUT_NAMES[kind]).read_bytes() == source.read_bytes()


@needs_nilearn
def test_tissue_map_has_the_template_grid_and_documented_labels(extracted):
    script, out = extracted
    t1 = nib.load(out / "mni152_t1.nii.gz")
    tissue = nib.load(out / "mni152_tissue.nii.gz")
    labels = np.asarray(tissue.dataobj)
    assert tissue.shape == t1.shape
    np.testing.assert_array_equal(tissue.affine, t1.affine)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(script.TISSUE_LABELS) == {0, 1, 2, 3}

    template = np.asarray(t1.dataobj).astype(float)
    gm = np.asarray(nib.load(out / "mni152_gm.nii.gz").dataobj) / 255.0
    wm = np.asarray(nib.load(out / "mni152_wm.nii.gz").dataobj) / 255.0
    brain = template > 0.2 * template.max()
    assert np.all(labels[template == 0] == 0)
    assert np.all(labels[brain & (gm > 0.55)] == 2)
    assert np.all(labels[brain & (wm > 0.55)] == 3)
    assert np.all(labels[brain & (gm + wm < 0.3)] == 1)
    assert np.mean(labels[brain] > 0) > 0.999


def test_labels_follow_the_argmax_rule_with_ties_to_the_first():
    t1 = np.array([0, 10, 10, 10, 10, 10], dtype=np.uint8).reshape(6, 1, 1)
    gm = np.array([200, 0, 255, 0, 100, 0], dtype=np.uint8).reshape(6, 1, 1)
    wm = np.array([0, 0, 0, 255, 100, 0], dtype=np.uint8).reshape(6, 1, 1)
    # gm and wm maxima are 255; p_other = 1 - gm - wm; the first voxel is outside the brain
    labels = load_script("scripts/extract_mni.py").tissue_labels(t1, gm, wm).ravel()
    np.testing.assert_array_equal(labels, [0, 1, 2, 3, 2, 1])   # gm = wm: grey matter


def test_missing_nilearn_names_the_package_and_the_install_command(monkeypatch, tmp_path):
    script = load_script("scripts/extract_mni.py")
    real = importlib.util.find_spec
    monkeypatch.setattr(script.importlib.util, "find_spec",
                        lambda name, *args: None if name == "nilearn" else real(name, *args))
    with pytest.raises(SFGError, match=r"`nilearn` is not installed.*pip install nilearn"):
        script.extract(tmp_path)
    assert script.main(["--out", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())
