"""Reading real files: nibabel's test images, files written here with header quirks,
MetaImage / NRRD / DICOM series through SimpleITK, and every way a read can fail."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sfg_app.errors import ConfigError, DataError
from sfg_app.io import Image, NibabelReader, SimpleITKReader, load_image
from sfg_app.registry import LOADERS


def test_the_registry_names_both_readers():
    assert LOADERS.get("nibabel") is NibabelReader
    assert LOADERS.get("simpleitk") is SimpleITKReader


@pytest.mark.parametrize("name, shape, dtype", [
    ("anatomical.nii", (33, 41, 25, 1), np.int16),          # big-endian int16
    ("example4d.nii.gz", (128, 96, 24, 2), np.int16),       # 4th axis -> channels
    ("example_nifti2.nii.gz", (32, 20, 12, 2), np.int16),   # NIfTI-2
    ("functional.nii", (17, 21, 3, 20), np.float32),        # scl_slope: scaled -> float32
    ("standard.nii.gz", (4, 5, 7, 1), np.uint8),
    ("reoriented_anat_moved.nii", (21, 26, 22, 1), np.float32),  # big-endian float32
])
def test_nibabel_test_files_read_channels_last_in_native_order(nibabel_data, name, shape, dtype):
    path = nibabel_data / name
    image = load_image(path)
    reference = nib.load(path)
    assert image.data.shape == shape
    assert image.data.dtype == dtype and image.data.dtype.isnative
    assert np.array_equal(image.affine, reference.affine)
    assert np.allclose(image.data.reshape(reference.shape), reference.get_fdata())
    assert image.metadata["loader"] == "nibabel"
    assert image.header["sform_code"] == reference.header["sform_code"]


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "functional.nii",
                                  "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_simpleitk_and_nibabel_agree_on_nibabel_test_files(nibabel_data, name):
    by_nibabel = load_image(nibabel_data / name, "nibabel")
    by_itk = load_image(nibabel_data / name, "simpleitk")
    assert by_itk.data.shape == by_nibabel.data.shape
    assert np.allclose(by_itk.data, by_nibabel.data, rtol=1e-6)
    assert np.allclose(by_itk.affine, by_nibabel.affine, atol=1e-5)


def test_cifti_file_is_refused_as_not_a_voxel_image(nibabel_data):
    with pytest.raises(DataError, match=r"row_major\.dconn\.nii.*nibabel.*Cifti2Image"):
        load_image(nibabel_data / "row_major.dconn.nii")


def _nifti(tmp_path, name, data, affine=np.eye(4), **header_fields):
    image = nib.Nifti1Image(data, affine)
    for key, value in header_fields.items():
        image.header[key] = value
    path = tmp_path / name
    nib.save(image, path)
    return path


def test_scl_slope_and_inter_are_applied(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(2.0, 10.0)
    nib.save(image, tmp_path / "scaled.nii")
    loaded = load_image(tmp_path / "scaled.nii")
    assert loaded.data.dtype == np.float32
    assert np.array_equal(loaded.data[..., 0], raw * 2.0 + 10.0)


def test_nan_slope_means_no_scaling_and_integers_stay_integers(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = _nifti(tmp_path, "nan_slope.nii", raw, scl_slope=np.nan, scl_inter=np.nan)
    assert np.isnan(nib.load(path).header["scl_slope"])
    loaded = load_image(path)
    assert loaded.data.dtype == np.int16
    assert np.array_equal(loaded.data[..., 0], raw)


def test_big_endian_file_reads_as_native(tmp_path):
    raw = np.arange(60, dtype=">i4").reshape(3, 4, 5)
    header = nib.Nifti1Header(endianness=">")
    header.set_data_dtype(">i4")
    nib.save(nib.Nifti1Image(raw, np.eye(4), header), tmp_path / "big.nii")
    assert nib.load(tmp_path / "big.nii").header.endianness == ">"
    assert nib.load(tmp_path / "big.nii").get_data_dtype() == np.dtype(">i4")
    loaded = load_image(tmp_path / "big.nii")
    assert type(loaded.data) is np.ndarray  # not a memory map of the file
    assert loaded.data.dtype == np.dtype("int32") and loaded.data.dtype.isnative
    assert np.array_equal(loaded.data[..., 0], raw)


def test_sform_and_qform_disagreeing_uses_nibabels_choice_the_sform(tmp_path):
    qform = np.diag([2.0, 2.0, 2.0, 1.0])
    sform = np.array([[0, -1.5, 0, 10], [1.5, 0, 0, -3], [0, 0, 3.0, 4], [0, 0, 0, 1]])
    image = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    image.header.set_qform(qform, code=1)
    image.header.set_sform(sform, code=2)
    nib.save(image, tmp_path / "disagree.nii.gz")
    loaded = load_image(tmp_path / "disagree.nii.gz")
    assert np.allclose(loaded.affine, sform)
    assert loaded.axcodes == ("A", "L", "S")


def test_non_orthogonal_sform_is_kept_exactly(tmp_path):
    sheared = np.array([[1.0, 0.3, 0, 5], [0, 1.0, 0, 0], [0, 0.2, 2.0, 0], [0, 0, 0, 1]])
    path = _nifti(tmp_path, "shear.nii", np.zeros((3, 4, 5), np.float32), sheared)
    assert np.allclose(load_image(path).affine, sheared)


def test_singleton_fourth_dimension_is_one_channel(tmp_path):
    path = _nifti(tmp_path, "t1.nii.gz", np.ones((3, 4, 5, 1), np.float32))
    loaded = load_image(path)
    assert loaded.data.shape == (3, 4, 5, 1)
    assert loaded.metadata["disk_shape"] == (3, 4, 5, 1)


def test_analyze_pair_with_singleton_fourth_dimension(tmp_path):
    raw = np.arange(60, dtype=np.uint8).reshape(3, 4, 5, 1)
    nib.save(nib.AnalyzeImage(raw, np.diag([-2.0, 2.0, 2.0, 1.0])), tmp_path / "old.hdr")
    loaded = load_image(tmp_path / "old.hdr")
    assert loaded.data.shape == (3, 4, 5, 1)
    assert np.array_equal(loaded.data, raw)
    assert loaded.axcodes == ("L", "A", "S")


def test_vector_intent_fifth_dimension_becomes_channels(tmp_path):
    raw = np.random.default_rng(0).normal(size=(3, 4, 5, 1, 3)).astype(np.float32)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_intent("vector")
    nib.save(image, tmp_path / "vector.nii.gz")
    loaded = load_image(tmp_path / "vector.nii.gz")
    assert loaded.data.shape == (3, 4, 5, 3)
    assert np.array_equal(loaded.data, raw[:, :, :, 0, :])
    assert loaded.metadata["vector"] is True


def test_five_dimensions_with_time_and_vectors_is_refused(tmp_path):
    path = _nifti(tmp_path, "tv.nii", np.zeros((2, 2, 2, 2, 3), np.float32))
    with pytest.raises(DataError, match=r"tv\.nii.*5 dimensions.*\(2, 2, 2, 2, 3\)"):
        load_image(path)


def test_two_dimensional_nifti_gets_z_of_one(tmp_path):
    raw = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = load_image(_nifti(tmp_path, "slice.nii", raw))
    assert loaded.data.shape == (3, 4, 1, 1)
    assert loaded.metadata["spatial_ndim"] == 2


def test_rgb_nifti_becomes_three_channels(tmp_path):
    rgb = np.zeros((3, 4, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"], rgb["B"] = 1, 2, 3
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii")
    loaded = load_image(tmp_path / "rgb.nii")
    assert loaded.data.shape == (3, 4, 5, 3)
    assert np.array_equal(loaded.data[1, 2, 3], [1, 2, 3])


def _sitk_image(array_zyx, spacing, origin, direction, vector=False):
    image = sitk.GetImageFromArray(array_zyx, isVector=vector)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("extension", [".mha", ".nrrd"])
def test_simpleitk_lps_geometry_becomes_a_ras_affine(tmp_path, extension):
    array = np.arange(60, dtype=np.int16).reshape(5, 4, 3)   # (Z, Y, X)
    # ITK (LPS) directions: axis i -> -y (anterior in LPS is -y), axis j -> +z, axis k -> +x.
    direction = (0, 0, 1, -1, 0, 0, 0, 1, 0)
    path = str(tmp_path / f"odd{extension}")
    sitk.WriteImage(_sitk_image(array, (0.8, 2.5, 1.5), (12.0, -31.5, -7.75), direction), path)
    loaded = load_image(path)
    assert loaded.data.shape == (3, 4, 5, 1)
    assert np.array_equal(loaded.data[..., 0], array.transpose(2, 1, 0))
    expected = np.array([[0, 0, -1.5, -12.0], [0.8, 0, 0, 31.5], [0, 2.5, 0, -7.75],
                         [0, 0, 0, 1]])
    assert np.allclose(loaded.affine, expected)
    assert loaded.axcodes == ("A", "S", "L")
    assert loaded.metadata["loader"] == "simpleitk"


def test_simpleitk_vector_pixels_become_channels(tmp_path):
    array = np.random.default_rng(1).normal(size=(5, 4, 3, 2)).astype(np.float32)
    path = str(tmp_path / "vector.nrrd")
    sitk.WriteImage(_sitk_image(array, (1.0, 1.0, 1.0), (0, 0, 0), np.eye(3).ravel(), True), path)
    loaded = load_image(path)
    assert loaded.data.shape == (3, 4, 5, 2)
    assert np.array_equal(loaded.data, array.transpose(2, 1, 0, 3))
    assert loaded.metadata["vector"] is True


def test_simpleitk_two_dimensional_image(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)   # (Y, X)
    path = str(tmp_path / "slice.mha")
    sitk.WriteImage(_sitk_image(array, (0.5, 0.7), (3.0, 4.0), (1, 0, 0, 1)), path)
    loaded = load_image(path)
    assert loaded.data.shape == (4, 3, 1, 1)
    assert loaded.metadata["spatial_ndim"] == 2
    assert np.allclose(loaded.affine, [[-0.5, 0, 0, -3], [0, -0.7, 0, -4], [0, 0, 1, 0],
                                       [0, 0, 0, 1]])


def test_dicom_series_folder(tmp_path):
    volume = np.arange(4 * 5 * 3, dtype=np.int16).reshape(3, 5, 4)   # (Z, Y, X)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.shape[0]):
        slice_image = sitk.GetImageFromArray(volume[z])
        slice_image.SetSpacing((0.7, 0.9))
        for tag, value in [("0008|0060", "CT"), ("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0013", str(z + 1)),
                           ("0020|0032", f"-10\\-20\\{2.5 * z + 30}"), ("0028|0030", "0.9\\0.7")]:
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z}.dcm"))
        writer.Execute(slice_image)
    loaded = load_image(folder)
    assert loaded.data.shape == (4, 5, 3, 1)
    assert np.array_equal(loaded.data[..., 0], volume.transpose(2, 1, 0))
    assert np.allclose(loaded.affine, [[-0.7, 0, 0, 10], [0, -0.9, 0, 20], [0, 0, 2.5, 30],
                                       [0, 0, 0, 1]])
    assert loaded.header["0020|000e"].strip() == "1.2.3.4"


def test_folder_without_dicom_series(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty'.*DICOM series.*no DICOM series.*own folder"):
        load_image(tmp_path / "empty")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"image file '.*nowhere\.nii\.gz' does not exist"):
        load_image(tmp_path / "nowhere.nii.gz")


def test_truncated_nifti_names_the_path_and_nibabels_reason(tmp_path):
    path = _nifti(tmp_path, "whole.nii.gz", np.random.default_rng(2).normal(
        size=(20, 20, 20)).astype(np.float32))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    assert nib.load(truncated).shape == (20, 20, 20)  # the header is intact, the voxels not
    with pytest.raises(DataError, match=r"Cannot read the image '.*truncated\.nii\.gz' with "
                                        r"nibabel: (EOFError|OSError): .*truncated or corrupt"):
        load_image(truncated)


def test_corrupt_metaimage_names_the_path_and_simpleitks_reason(tmp_path):
    path = tmp_path / "garbage.mha"
    path.write_text("this is not a MetaImage header\n")
    with pytest.raises(DataError, match=r"Cannot read the image '.*garbage\.mha' with "
                                        r"SimpleITK: RuntimeError: .*"):
        load_image(path)


def test_gzip_of_garbage_named_nii_gz(tmp_path):
    path = tmp_path / "noise.nii.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(os.urandom(400))
    with pytest.raises(DataError, match=r"noise\.nii\.gz' with nibabel"):
        load_image(path)


def test_unknown_loader_suggests_the_close_name(nibabel_data):
    with pytest.raises(ConfigError, match=r"Unknown loader 'nibabl'.*Did you mean 'nibabel'"):
        load_image(nibabel_data / "standard.nii.gz", loader="nibabl")


def test_complex_voxels_are_refused(tmp_path):
    path = _nifti(tmp_path, "complex.nii", np.ones((2, 3, 4), np.complex64))
    with pytest.raises(DataError, match=r"complex\.nii' holds complex voxels"):
        load_image(path)


def test_image_validates_its_shape():
    with pytest.raises(ValueError, match=r"\(X, Y, Z, C\)"):
        Image(np.zeros((2, 3, 4)), np.eye(4), "x.nii")


def _raw_nifti(path, data, **fields):
    """A NIfTI file written field by field: nibabel refuses to build an image whose
    affine it cannot decompose, and such files exist in the wild."""
    import io as _io

    header = nib.Nifti1Image(data, np.eye(4)).header.copy()
    for key, value in fields.items():
        header[key] = value
    stream = _io.BytesIO()
    header.write_to(stream)
    stream.write(b"\0" * (int(header["vox_offset"]) - stream.tell()))
    stream.write(data.tobytes(order="F"))
    path.write_bytes(stream.getvalue())
    return path


@pytest.mark.parametrize("fields, problem", [
    ({"srow_z": [0, 0, 0, 0], "sform_code": 1}, "voxel axis k has zero length"),
    ({"srow_x": [1, 1, 0, 0], "srow_y": [1, 1, 0, 0], "srow_z": [0, 0, 1, 0],
      "sform_code": 1}, "not independent"),
    ({"srow_x": [np.nan, 0, 0, 0], "sform_code": 1}, "not a finite 4x4 matrix"),
])
@pytest.mark.parametrize("loader", ["auto", "simpleitk"])
def test_an_affine_that_cannot_map_voxels_is_a_data_error_naming_the_file(
        tmp_path, fields, problem, loader):
    path = _raw_nifti(tmp_path / "broken.nii", np.ones((6, 5, 4), np.float32), **fields)
    with pytest.raises(DataError) as error:
        load_image(path, loader)
    message = str(error.value)
    assert str(path) in message
    # SimpleITK refuses some of these files itself; its reason is then the message.
    assert problem in message or (loader == "simpleitk" and "Cannot read" in message)


def test_anisotropic_and_oblique_affines_are_accepted(tmp_path):
    affine = np.array([[0.1, 0.0, 0.3, 4.0], [0.0, 0.1, 0.0, 2.0], [0.0, 0.0, 5.0, 1.0],
                       [0.0, 0.0, 0.0, 1.0]])
    path = tmp_path / "thin.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), affine), path)
    np.testing.assert_allclose(load_image(path).affine, affine)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_volume_too_large_for_memory_is_refused_before_its_voxels_are_read(tmp_path,
                                                                             monkeypatch,
                                                                             suffix):
    """The header says how large the volume is; a compressed file of a few MB can hold
    many GB. Checked against the available memory before reading (here, 1 MiB)."""
    from sfg_app.io import readers

    path = tmp_path / f"big{suffix}"
    if suffix == ".nii.gz":
        nib.save(nib.Nifti1Image(np.zeros((100, 100, 100), np.int16), np.eye(4)), path)
    else:
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((100, 100, 100), np.int16)), str(path))
    monkeypatch.setattr(readers, "available_memory", lambda: 2 ** 20)
    with pytest.raises(DataError, match=r"big\..* holds 100 x 100 x 100 voxels: reading and "
                                        r"preprocessing it takes about 0\.0 GiB, more than "
                                        r"the 0\.0 GiB of memory available\. Crop it"):
        load_image(path)
    monkeypatch.undo()
    assert load_image(path).data.shape[:3] == (100, 100, 100)
