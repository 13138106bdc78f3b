"""Writing: the file read back has the data, the affine and the layout asked for."""

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sfg_app.errors import DataError
from sfg_app.io import load_image, write_image


def _leftovers(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii", "out.mha", "out.nrrd"])
def test_odd_orientation_is_written_and_read_back(tmp_path, psr_affine, name):
    data = np.random.default_rng(0).normal(size=(4, 5, 6, 1)).astype(np.float32)
    write_image(tmp_path / name, data, psr_affine)
    back = load_image(tmp_path / name)
    assert np.array_equal(back.data, data)
    assert np.allclose(back.affine, psr_affine, atol=1e-6)
    assert back.axcodes == ("P", "S", "R")
    assert _leftovers(tmp_path) == []


def test_nifti_without_reference_gets_sform_and_qform_and_mm(tmp_path, psr_affine):
    write_image(tmp_path / "a.nii.gz", np.zeros((2, 3, 4)), psr_affine)
    header = nib.load(tmp_path / "a.nii.gz").header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (2, 1)
    assert header.get_xyzt_units() == ("mm", "sec")
    assert np.allclose(header.get_qform(), psr_affine, atol=1e-6)


def test_reference_header_keeps_codes_units_and_a_disagreeing_qform(tmp_path):
    qform = np.diag([2.0, 2.0, 2.0, 1.0])
    sform = np.array([[0, -1.5, 0, 10], [1.5, 0, 0, -3], [0, 0, 3.0, 4], [0, 0, 0, 1]])
    source = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), None)
    source.header.set_qform(qform, code=1)
    source.header.set_sform(sform, code=4)
    source.header.set_xyzt_units("micron", "msec")
    source.header["descrip"] = b"scanner 7"
    nib.save(source, tmp_path / "in.nii.gz")
    like = load_image(tmp_path / "in.nii.gz")
    write_image(tmp_path / "out.nii.gz", like.data.astype(np.float32) / 2, like.affine, like=like)
    header = nib.load(tmp_path / "out.nii.gz").header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 1)
    assert np.array_equal(header.get_sform(), nib.load(tmp_path / "in.nii.gz").header.get_sform())
    assert np.array_equal(header.get_qform(), nib.load(tmp_path / "in.nii.gz").header.get_qform())
    assert header.get_xyzt_units() == ("micron", "msec")
    assert header["descrip"] == b"scanner 7"
    assert np.array_equal(load_image(tmp_path / "out.nii.gz").data, like.data / 2)


def test_new_affine_with_reference_takes_the_reference_codes(tmp_path, psr_affine):
    source = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4))
    source.header.set_sform(np.eye(4), code=3)
    source.header.set_qform(np.eye(4), code=1)
    nib.save(source, tmp_path / "in.nii")
    like = load_image(tmp_path / "in.nii")
    write_image(tmp_path / "out.nii", np.zeros((3, 4, 5)), psr_affine, like=like)
    out = nib.load(tmp_path / "out.nii")
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (3, 1)
    assert np.allclose(out.affine, psr_affine, atol=1e-6)
    assert np.allclose(out.header.get_qform(), psr_affine, atol=1e-6)


def test_sheared_affine_goes_to_the_sform_only(tmp_path):
    sheared = np.array([[1.0, 0.3, 0, 5], [0, 1.0, 0, 0], [0, 0.2, 2.0, 0], [0, 0, 0, 1]])
    write_image(tmp_path / "shear.nii", np.zeros((3, 4, 5)), sheared)
    header = nib.load(tmp_path / "shear.nii").header
    assert int(header["qform_code"]) == 0
    assert np.allclose(header.get_sform(), sheared)


def test_scaled_reference_does_not_rescale_the_output(tmp_path):
    source = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    source.header.set_slope_inter(3.0, -7.0)
    nib.save(source, tmp_path / "scaled.nii")
    like = load_image(tmp_path / "scaled.nii")
    labels = np.arange(24, dtype=np.int64).reshape(2, 3, 4) % 5
    write_image(tmp_path / "labels.nii.gz", labels, like.affine, like=like)
    out = nib.load(tmp_path / "labels.nii.gz")
    assert out.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(out.dataobj), labels)


@pytest.mark.parametrize("values, expected", [
    (np.array([0, 1, 255]), np.uint8), (np.array([-1, 2]), np.int16),
    (np.array([0, 70000]), np.int32), (np.array([True, False]), np.uint8)])
def test_integer_data_gets_the_smallest_type_that_holds_it(tmp_path, values, expected):
    data = np.resize(values, (2, 2, 2))
    write_image(tmp_path / "x.nii.gz", data, np.eye(4))
    image = nib.load(tmp_path / "x.nii.gz")
    assert image.get_data_dtype() == expected
    assert np.array_equal(np.asanyarray(image.dataobj), data)


def test_float_written_as_integer_is_rounded(tmp_path):
    write_image(tmp_path / "x.mha", np.full((2, 2, 2), 2.6), np.eye(4), dtype=np.int16)
    back = load_image(tmp_path / "x.mha")
    assert back.data.dtype == np.int16 and np.all(back.data == 3)


def test_values_outside_the_integer_type_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"x\.nii\.gz' as uint8.*\[-3\.0, 300\.0\].*float32"):
        write_image(tmp_path / "x.nii.gz", np.array([-3.0, 300.0] * 4).reshape(2, 2, 2),
                    np.eye(4), dtype=np.uint8)
    assert os.listdir(tmp_path) == []


def test_two_file_formats_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"x\.mhd'.*two files.*\.nii\.gz"):
        write_image(tmp_path / "x.mhd", np.zeros((2, 2, 2)), np.eye(4))


def test_unwritable_format_names_the_path_and_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match=r"SimpleITK cannot write '.*x\.xyz'"):
        write_image(tmp_path / "x.xyz", np.zeros((2, 2, 2)), np.eye(4))
    assert os.listdir(tmp_path) == []


def test_writing_replaces_an_existing_file_whole(tmp_path):
    write_image(tmp_path / "x.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    write_image(tmp_path / "x.nii.gz", np.ones((3, 3, 3)), np.eye(4))
    assert load_image(tmp_path / "x.nii.gz").data.shape == (3, 3, 3, 1)
    assert os.listdir(tmp_path) == ["x.nii.gz"]


def test_missing_folders_are_made(tmp_path):
    write_image(tmp_path / "a" / "b" / "x.nrrd", np.zeros((2, 2, 2)), np.eye(4))
    assert (tmp_path / "a" / "b" / "x.nrrd").is_file()


def test_layout_of_the_reference_is_kept(tmp_path):
    vector = nib.Nifti1Image(np.zeros((3, 4, 5, 1, 2), np.float32), np.eye(4))
    vector.header.set_intent("vector")
    nib.save(vector, tmp_path / "vector.nii")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 1), np.float32), np.eye(4)),
             tmp_path / "single.nii")
    like_vector, like_single = (load_image(tmp_path / n) for n in ("vector.nii", "single.nii"))
    write_image(tmp_path / "v.nii", np.ones((3, 4, 5, 2)), np.eye(4), like=like_vector)
    write_image(tmp_path / "s.nii", np.ones((3, 4, 5, 1)), np.eye(4), like=like_single)
    write_image(tmp_path / "m.nii", np.ones((3, 4, 5, 1)), np.eye(4), like=like_vector)
    assert nib.load(tmp_path / "v.nii").shape == (3, 4, 5, 1, 2)
    assert nib.load(tmp_path / "v.nii").header.get_intent()[0] == "vector"
    assert nib.load(tmp_path / "s.nii").shape == (3, 4, 5, 1)
    assert nib.load(tmp_path / "m.nii").shape == (3, 4, 5)
    assert nib.load(tmp_path / "m.nii").header.get_intent()[0] == "none"


def test_multichannel_simpleitk_output_is_a_vector_image(tmp_path):
    data = np.random.default_rng(3).normal(size=(3, 4, 5, 2)).astype(np.float32)
    write_image(tmp_path / "v.nrrd", data, np.eye(4))
    image = sitk.ReadImage(str(tmp_path / "v.nrrd"))
    assert image.GetNumberOfComponentsPerPixel() == 2 and image.GetSize() == (3, 4, 5)
    assert np.array_equal(load_image(tmp_path / "v.nrrd").data, data)


def _two_dimensional_source(path, affine):
    """A real 2D file (no Z axis on disk), written by nibabel or SimpleITK directly."""
    values = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    if str(path).endswith(".nii.gz"):
        nib.save(nib.Nifti1Image(values, affine), path)
        return
    image = sitk.GetImageFromArray(values.T.copy())
    image.SetSpacing((0.5, 0.7))
    image.SetOrigin((-3.0, 4.0))   # LPS of RAS (3, -4)
    image.SetDirection((-1.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))


@pytest.mark.parametrize("name", ["slice.nii.gz", "slice.mha", "slice.nrrd"])
def test_two_dimensional_input_is_written_back_as_two_dimensional(tmp_path, name):
    affine = np.array([[0.5, 0, 0, 3.0], [0, -0.7, 0, -4.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    _two_dimensional_source(tmp_path / f"in_{name}", affine)
    like = load_image(tmp_path / f"in_{name}")
    assert like.metadata["spatial_ndim"] == 2
    assert np.allclose(like.affine, affine)
    write_image(tmp_path / name, like.data * 2, like.affine, like=like)
    back = load_image(tmp_path / name)
    assert back.metadata["spatial_ndim"] == 2
    assert back.data.shape == (3, 4, 1, 1)
    assert np.allclose(back.affine, affine)
    assert np.array_equal(back.data, like.data * 2)


def test_two_dimensional_grid_off_the_z_plane_stays_three_dimensional_in_metaimage(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((3, 4), np.float32), np.eye(4)), tmp_path / "in.nii")
    like = load_image(tmp_path / "in.nii")
    assert like.metadata["spatial_ndim"] == 2
    shifted = np.eye(4)
    shifted[2, 3] = 12.5
    write_image(tmp_path / "out.mha", np.ones((3, 4, 1)), shifted, like=like)
    back = load_image(tmp_path / "out.mha")
    assert back.metadata["spatial_ndim"] == 3
    assert np.allclose(back.affine, shifted)
