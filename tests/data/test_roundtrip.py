"""Whole-volume round trips on real files: read -> reorient -> resample -> pad -> (identity
network) -> undo -> write, and the written file has the input's shape and affine exactly.

The windows and aggregation of grid inference are not here (the lead joins them); the
"network output" is the preprocessed array itself.
"""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sfg_app.data.dataset import SubjectFiles
from sfg_app.data.preprocessing import Preprocessor, SectionSpec, undo
from sfg_app.io import load_image, write_image

# Voxel axes P, S, R; voxels 1.25 x 2.5 x 1.5 mm; origin away from zero.
PSR = np.array([[0.0, 0.0, 1.5, -12.25], [-1.25, 0.0, 0.0, 31.5], [0.0, 2.5, 0.0, -7.75],
                [0.0, 0.0, 0.0, 1.0]])
SHAPE = (14, 9, 11)


def _volume(shape=SHAPE):
    """Smooth intensities (interpolation can follow them) and labels made from them."""
    grid = np.indices(shape, dtype=np.float64)
    slope = 30 * np.sin(grid[2] / 5.0) if len(shape) == 3 else 0.0
    image = 200 + 80 * np.sin(grid[0] / 4.0) * np.cos(grid[1] / 3.0) + slope
    labels = np.digitize(image, [170, 210, 250]).astype(np.uint8)
    return image.astype(np.float32), labels


def _write_source(folder, extension, image, labels, affine):
    """The subject's files, written by the format's own library (not by the code under test)."""
    paths = {"MR": str(folder / f"s1_mr{extension}"), "LABEL": str(folder / f"s1_seg{extension}")}
    for name, data in (("MR", image), ("LABEL", labels)):
        if extension.startswith(".nii"):
            nib.save(nib.Nifti1Image(data, affine), paths[name])
            continue
        itk = sitk.GetImageFromArray(np.ascontiguousarray(data.T))
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        n = data.ndim
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        itk.SetSpacing(spacing[:n].tolist())
        itk.SetOrigin(lps[:n, 3].tolist())
        itk.SetDirection((lps[:3, :3] / spacing)[:n, :n].ravel().tolist())
        sitk.WriteImage(itk, paths[name])
    return SubjectFiles("s1", paths)


def _round_trip(tmp_path, subject, preprocessor, extension, image_order):
    processed = preprocessor(subject)
    record = processed.record
    outputs = {}
    for name, order in (("MR", image_order), ("LABEL", 0)):
        network_output = processed.arrays[name]          # the identity "network"
        path = tmp_path / f"out_{name}{extension}"
        write_image(path, undo(network_output, record, order), record.source.affine,
                    like=record.source)
        outputs[name] = load_image(path)
    return processed, outputs


@pytest.mark.parametrize("extension", [".nii.gz", ".mha", ".nrrd"])
@pytest.mark.parametrize("pixdim", [(0.5, 0.75, 1.0), None])
def test_round_trip_restores_shape_affine_and_values(tmp_path, extension, pixdim):
    image, labels = _volume()
    subject = _write_source(tmp_path, extension, image, labels, PSR)
    source = {name: load_image(path) for name, path in subject.paths.items()}
    preprocessor = Preprocessor(
        [SectionSpec("MR", interp_order=3), SectionSpec("LABEL", kind="label", interp_order=0)],
        pixdim=pixdim, axcodes=("R", "A", "S"), volume_padding_size=(3, 2, 1),
        volume_padding_mode="reflect")
    processed, outputs = _round_trip(tmp_path, subject, preprocessor, extension, image_order=3)
    assert processed.record.resampled == (pixdim is not None)
    assert processed.arrays["MR"].shape[:3] != SHAPE
    for name in ("MR", "LABEL"):
        assert outputs[name].data.shape == source[name].data.shape == SHAPE + (1,)
        assert np.array_equal(outputs[name].affine, source[name].affine)
        assert outputs[name].axcodes == ("P", "S", "R")
    assert np.array_equal(outputs["LABEL"].data, source["LABEL"].data)  # nearest: exact
    if pixdim is None:                                                    # no resampling: exact
        assert np.array_equal(outputs["MR"].data, source["MR"].data)
    else:                                                                 # cubic there and back
        error = np.abs(outputs["MR"].data - source["MR"].data)
        assert error.max() < 0.5 and error.mean() < 0.05  # intensities span 129..310


def test_nifti_round_trip_keeps_the_header(tmp_path):
    image, labels = _volume()
    subject = _write_source(tmp_path, ".nii.gz", image, labels, PSR)
    source_header = nib.load(subject.paths["MR"]).header
    preprocessor = Preprocessor([SectionSpec("MR", interp_order=1),
                                 SectionSpec("LABEL", kind="label", interp_order=0)],
                                pixdim=(1.0, 1.0, 1.0), axcodes="LPS")
    _round_trip(tmp_path, subject, preprocessor, ".nii.gz", image_order=1)
    written = nib.load(tmp_path / "out_LABEL.nii.gz")
    assert written.get_data_dtype() == np.uint8
    for key in ("sform_code", "qform_code", "srow_x", "srow_y", "srow_z", "quatern_b",
                "quatern_c", "quatern_d", "qoffset_x", "pixdim", "xyzt_units"):
        assert np.array_equal(written.header[key], source_header[key]), key


@pytest.mark.parametrize("extension", [".nii.gz", ".mha"])
def test_two_dimensional_round_trip(tmp_path, extension):
    image, labels = _volume((14, 9))
    affine = np.array([[0.0, 0.7, 0.0, 4.5], [-1.1, 0.0, 0.0, -3.0], [0.0, 0.0, 1.0, 0.0],
                       [0.0, 0.0, 0.0, 1.0]])
    subject = _write_source(tmp_path, extension, image, labels, affine)
    source = {name: load_image(path) for name, path in subject.paths.items()}
    assert source["MR"].metadata["spatial_ndim"] == 2
    preprocessor = Preprocessor([SectionSpec("MR", interp_order=3),
                                 SectionSpec("LABEL", kind="label", interp_order=0)],
                                pixdim=(0.5, 0.5, 1.0), axcodes="RAS",
                                volume_padding_size=(4, 4, 0))
    processed, outputs = _round_trip(tmp_path, subject, preprocessor, extension, image_order=3)
    assert processed.arrays["MR"].shape == (21, 39, 1, 1)   # 9 x 0.7 mm -> 13 x 0.5 mm, + 8
    for name in ("MR", "LABEL"):
        assert outputs[name].metadata["spatial_ndim"] == 2
        assert outputs[name].data.shape == (14, 9, 1, 1)
        assert np.array_equal(outputs[name].affine, source[name].affine)
    assert np.array_equal(outputs["LABEL"].data, source["LABEL"].data)
    assert np.abs(outputs["MR"].data - source["MR"].data).max() < 0.5


def test_multichannel_round_trip_of_a_4d_nifti(tmp_path):
    image, _ = _volume()
    channels = np.stack([image, 400 - image], axis=-1)
    nib.save(nib.Nifti1Image(channels, PSR), tmp_path / "s1_mr.nii.gz")
    subject = SubjectFiles("s1", {"MR": str(tmp_path / "s1_mr.nii.gz")})
    processed = Preprocessor([SectionSpec("MR", interp_order=0)], pixdim=(1.0, 1.0, 1.0),
                             axcodes="RAS")(subject)
    assert processed.arrays["MR"].shape[3] == 2
    record = processed.record
    write_image(tmp_path / "out.nii.gz", undo(processed.arrays["MR"], record, 0),
                record.source.affine, like=record.source)
    written = load_image(tmp_path / "out.nii.gz")
    assert nib.load(tmp_path / "out.nii.gz").shape == SHAPE + (2,)
    assert np.array_equal(written.affine, load_image(tmp_path / "s1_mr.nii.gz").affine)
    assert np.array_equal(written.data, channels)
