"""Preprocessing on real files: one grid per subject, intensity steps, and bad input."""

import time

import numpy as np
import pytest
import yaml
from scipy import ndimage

from sfg_app.data.dataset import SubjectFiles
from sfg_app.data.normalisation import foreground_mask
from sfg_app.data.preprocessing import (Preprocessor, SectionSpec, check_label_values, undo,
                                        zoom)
from sfg_app.errors import ConfigError, DataError
from sfg_app.io import Image, geometry, load_image, write_image

AFFINE = np.array([[0.0, 0.0, 1.5, -12.0], [-1.0, 0.0, 0.0, 30.0], [0.0, 2.0, 0.0, -8.0],
                   [0.0, 0.0, 0.0, 1.0]])   # P, S, R voxel axes
SHAPE = (12, 10, 8)


def _smooth(shape=SHAPE, seed=0):
    """A smooth positive image with a dark background border (for masks)."""
    grid = np.indices(shape, dtype=np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 3, size=3)
    values = 100 + 50 * np.sin(grid[0] / 3 + phase[0]) * np.cos(grid[1] / 4 + phase[1]) \
        + 10 * grid[2] / shape[2]
    values[:2] = 5.0
    return values.astype(np.float32)


@pytest.fixture
def subject(tmp_path):
    image = _smooth()
    labels = (image > 100).astype(np.uint8) + (image > 130)
    write_image(tmp_path / "s1_mr.nii.gz", image, AFFINE)
    write_image(tmp_path / "s1_seg.nii.gz", labels, AFFINE)
    return SubjectFiles("s1", {"MR": str(tmp_path / "s1_mr.nii.gz"),
                               "LABEL": str(tmp_path / "s1_seg.nii.gz")})


def _specs(**image_settings):
    return [SectionSpec("MR", **image_settings),
            SectionSpec("LABEL", kind="label", interp_order=0)]


def test_sections_share_one_reoriented_resampled_padded_grid(subject):
    processed = Preprocessor(_specs(), pixdim=(0.75, 1.0, 1.0), axcodes="RAS",
                             volume_padding_size=(2, 3, 0))(subject)
    mr, labels = processed.arrays["MR"], processed.arrays["LABEL"]
    record = processed.record
    # PSR (1.0 x 2.0 x 1.5 mm) -> RAS: 8 x 12 x 10 voxels of 1.5 x 1.0 x 2.0 mm.
    assert record.reoriented_shape == (8, 12, 10)
    assert record.resampled_shape == (16, 12, 20)
    assert record.shape == (20, 18, 20) == mr.shape[:3] == labels.shape[:3]
    assert mr.dtype == np.float32 and labels.dtype == np.int32
    assert mr.flags["C_CONTIGUOUS"] and labels.flags["C_CONTIGUOUS"]
    assert geometry.axcodes(record.affine) == ("R", "A", "S")
    assert np.allclose(geometry.spacing(record.affine), (0.75, 1.0, 1.0))
    assert set(np.unique(labels)) == {0, 1, 2}
    # Voxel centres of the preprocessed grid sample the source at the same world point.
    source = load_image(subject.paths["LABEL"])
    for voxel in [(5, 7, 4), (12, 3, 15), (2, 14, 19)]:
        world = record.affine @ (*voxel, 1)
        source_voxel = np.rint(np.linalg.solve(source.affine, world)[:3]).astype(int)
        if np.all((source_voxel >= 0) & (source_voxel < SHAPE)) and voxel[0] >= 2:
            assert labels[voxel + (0,)] == source.data[tuple(source_voxel) + (0,)]


def test_no_pixdim_and_no_axcodes_leave_the_grid_alone(subject):
    processed = Preprocessor(_specs())(subject)
    assert np.array_equal(processed.arrays["MR"], load_image(subject.paths["MR"]).data)
    assert np.array_equal(processed.record.affine, load_image(subject.paths["MR"]).affine)
    assert not processed.record.resampled


def test_values_of_the_subject_pass_through(subject):
    subject = SubjectFiles("s1", subject.paths, {"AGE": 61.0})
    assert Preprocessor(_specs())(subject).values == {"AGE": 61.0}


def test_zscore_over_an_otsu_foreground(subject):
    mr = Preprocessor(_specs(normalisation="zscore", foreground_type="otsu"))(subject)
    values = mr.arrays["MR"][..., 0]
    foreground = values > values[0, 0, 0]   # the dark border is the background
    assert abs(values[foreground].mean()) < 1e-4 and abs(values[foreground].std() - 1) < 1e-4
    assert np.allclose(values[:2], values[0, 0, 0])


def test_zscore_over_a_mask_section(subject, tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:8, 2:6, 1:5] = 1
    write_image(tmp_path / "s1_body.nii.gz", mask, AFFINE)
    subject.paths["BODY"] = str(tmp_path / "s1_body.nii.gz")
    specs = _specs(normalisation="zscore", foreground_type="BODY") + [
        SectionSpec("BODY", kind="label", interp_order=0)]
    processed = Preprocessor(specs, axcodes="LAS")(subject)
    values = processed.arrays["MR"][..., 0][processed.arrays["BODY"][..., 0] > 0]
    assert values.size == 64
    assert abs(values.mean()) < 1e-4 and abs(values.std() - 1) < 1e-4


def test_threshold_foreground_that_selects_nothing(subject):
    with pytest.raises(DataError, match=r"Subject 's1': the foreground of \[MR\] \(.*s1_mr\.nii"
                                        r"\.gz, channel 0\) is empty with foreground_type="
                                        r"'threshold', foreground_threshold=1000\.0"):
        Preprocessor(_specs(normalisation="zscore", foreground_type="threshold",
                            foreground_threshold=1000.0))(subject)


def test_intensity_window_rescales_to_the_unit_range(subject):
    values = Preprocessor(_specs(intensity_window=(50, 150)))(subject).arrays["MR"]
    assert values.min() == 0.0 and values.max() == 1.0
    original = load_image(subject.paths["MR"]).data
    inside = (original > 50) & (original < 150)
    assert np.allclose(values[inside], (original[inside] - 50) / 100)


def test_percentile_clip_over_the_foreground(subject):
    values = Preprocessor(_specs(percentile_clip=(5, 95), foreground_type="mean"))(subject)
    original = load_image(subject.paths["MR"]).data
    foreground = original[original > original.mean()]
    low, high = np.percentile(foreground, (5, 95))
    assert np.isclose(values.arrays["MR"].min(), low) and np.isclose(values.arrays["MR"].max(), high)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric", "minimum"])
def test_padding_modes(subject, mode):
    processed = Preprocessor(_specs(), volume_padding_size=(2, 0, 1),
                             volume_padding_mode=mode)(subject)
    original = load_image(subject.paths["MR"]).data
    assert np.array_equal(processed.arrays["MR"],
                          np.pad(original, ((2, 2), (0, 0), (1, 1), (0, 0)), mode=mode))


def _histogram_subjects(tmp_path, scales):
    subjects = []
    for index, scale in enumerate(scales):
        path = tmp_path / f"h{index}_mr.nii.gz"
        write_image(path, _smooth(seed=index) * scale + 20 * index, AFFINE)
        subjects.append(SubjectFiles(f"h{index}", {"MR": str(path)}))
    return subjects


def test_histogram_landmarks_are_learned_saved_and_reused(tmp_path):
    subjects = _histogram_subjects(tmp_path, [1.0, 3.0, 0.5])
    reference_file = str(tmp_path / "model" / "histogram.yaml")
    specs = [SectionSpec("MR", normalisation="histogram", foreground_type="otsu",
                         norm_type="quartile", cutoff=(0.05, 0.95))]
    training = Preprocessor(specs, histogram_ref_file=reference_file)
    training.fit_histograms(subjects[:2])
    stored = yaml.safe_load(open(reference_file))
    assert stored["MR"]["norm_type"] == "quartile" and stored["MR"]["cutoff"] == [0.05, 0.95]
    landmarks = stored["MR"]["landmarks"][0]
    assert len(landmarks) == 5 and landmarks[0] == 0.0 and landmarks[-1] == 1.0
    # A new subject, 7 times brighter, lands on the same scale at inference.
    inference = Preprocessor(specs, histogram_ref_file=reference_file)
    out = inference(subjects[2]).arrays["MR"][..., 0]
    raw = load_image(subjects[2].paths["MR"]).data[..., 0]
    mask = foreground_mask(raw, "otsu")
    assert np.allclose(np.percentile(out[mask], [5, 25, 50, 75, 95]), landmarks, atol=0.02)


def test_histogram_file_learned_with_other_settings(tmp_path):
    subjects = _histogram_subjects(tmp_path, [1.0])
    reference_file = str(tmp_path / "histogram.yaml")
    Preprocessor([SectionSpec("MR", normalisation="histogram")],
                 histogram_ref_file=reference_file).fit_histograms(subjects)
    with pytest.raises(DataError, match=r"landmarks of \[MR\] in '.*histogram\.yaml' were "
                                        r"learned with cutoff=\(0\.01, 0\.99\), norm_type="
                                        r"'percentile'; the section says cutoff=\(0\.05, 0\.95\)"):
        Preprocessor([SectionSpec("MR", normalisation="histogram", cutoff=(0.05, 0.95))],
                     histogram_ref_file=reference_file)(subjects[0])


def test_histogram_without_a_learned_file(tmp_path):
    subjects = _histogram_subjects(tmp_path, [1.0])
    with pytest.raises(DataError, match=r"histogram reference file '.*missing\.yaml' does not "
                                        r"exist.*Train first"):
        Preprocessor([SectionSpec("MR", normalisation="histogram")],
                     histogram_ref_file=str(tmp_path / "missing.yaml"))(subjects[0])


def test_histogram_of_a_constant_training_image_names_the_subject(tmp_path):
    write_image(tmp_path / "flat_mr.nii.gz", np.full(SHAPE, 7.0, np.float32), AFFINE)
    subjects = [SubjectFiles("flat", {"MR": str(tmp_path / "flat_mr.nii.gz")})]
    with pytest.raises(DataError, match=r"landmarks for \[MR\]: training subject 'flat' has the "
                                        r"same intensity 7 at both cutoff percentiles"):
        Preprocessor([SectionSpec("MR", normalisation="histogram")],
                     histogram_ref_file=str(tmp_path / "h.yaml")).fit_histograms(subjects)
    assert not (tmp_path / "h.yaml").exists()


# Bad input -------------------------------------------------------------------------------

def test_nan_and_inf_voxels_name_the_file_and_count(tmp_path, subject):
    image = _smooth()
    image[0, 0, :3] = np.nan
    image[1, 1, 1] = np.inf
    write_image(tmp_path / "s1_mr.nii.gz", image, AFFINE)
    with pytest.raises(DataError, match=r"image '.*s1_mr\.nii\.gz' has 3 NaN and 1 infinite "
                                        r"voxel\(s\) out of 960"):
        Preprocessor(_specs())(subject)


def test_label_values_outside_num_classes(subject):
    labels = load_image(subject.paths["LABEL"])
    check_label_values(labels.data, 3, labels.path)
    with pytest.raises(DataError, match=r"label image '.*s1_seg\.nii\.gz' has values 2 outside "
                                        r"the allowed range 0\.\.1 \(integers, num_classes=2\); "
                                        r"all its values: 0, 1, 2\."):
        check_label_values(labels.data, 2, labels.path)


def test_negative_and_fractional_label_values():
    with pytest.raises(DataError, match=r"values -1, 0\.5 outside the allowed range 0\.\.3"):
        check_label_values(np.array([-1.0, 0.0, 0.5, 3.0]), 4, "labels.nii")


def test_label_file_with_fractional_values(tmp_path, subject):
    write_image(tmp_path / "s1_seg.nii.gz", np.full(SHAPE, 0.25, np.float32), AFFINE)
    with pytest.raises(DataError, match=r"label image '.*s1_seg\.nii\.gz' has non-integer "
                                        r"values such as 0\.25"):
        Preprocessor(_specs())(subject)


def test_label_values_beyond_int32_are_refused_before_the_cast(tmp_path, subject):
    """int64 4294967298 cast to int32 would be class 2, inside any num_classes >= 3."""
    import nibabel as nib

    data = np.zeros(SHAPE, np.int64)
    data[1, 1, 1] = 4294967298
    nib.save(nib.Nifti1Image(data, AFFINE, dtype=np.int64), tmp_path / "s1_seg.nii.gz")
    with pytest.raises(DataError, match=r"label image '.*s1_seg\.nii\.gz' has values up to "
                                        r"4\.29497e\+09 .*beyond any class label"):
        Preprocessor(_specs())(subject)


def test_sections_in_different_spaces_are_named_with_the_difference(tmp_path, subject):
    moved = AFFINE.copy()
    moved[:3, 3] += (0.0, 0.0, 3.0)
    write_image(tmp_path / "s1_seg.nii.gz", np.zeros(SHAPE, np.uint8), moved)
    with pytest.raises(DataError, match=r"Subject 's1': section \[LABEL\] \(.*s1_seg\.nii\.gz\) "
                                        r"is not in the physical space of \[MR\] \(.*s1_mr\.nii"
                                        r"\.gz\): the grids are 3 mm apart.*origin \(-12, 30, "
                                        r"-5\) and \(-12, 30, -8\) mm.*match_space = resample"):
        Preprocessor(_specs())(subject)


def test_sections_of_different_shapes(tmp_path, subject):
    write_image(tmp_path / "s1_seg.nii.gz", np.zeros((12, 10, 9), np.uint8), AFFINE)
    with pytest.raises(DataError, match=r"\[LABEL\].*the shapes differ: \(12, 10, 9\) and "
                                        r"\(12, 10, 8\)"):
        Preprocessor(_specs())(subject)


def test_match_space_resample_puts_a_section_on_the_reference_grid(tmp_path, subject):
    labels = np.zeros((14, 10, 8), np.uint8)
    labels[6:9, 3:5, 2:6] = 3
    shifted = AFFINE @ np.array([[1, 0, 0, -2], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    write_image(tmp_path / "s1_seg.nii.gz", labels, shifted)   # 2 voxels longer on axis 0
    specs = [SectionSpec("MR"), SectionSpec("LABEL", kind="label", interp_order=0,
                                            match_space="resample")]
    processed = Preprocessor(specs)(subject)
    assert np.array_equal(processed.arrays["LABEL"][..., 0], labels[2:14])


def test_subject_without_the_reference_section(subject):
    del subject.paths["MR"]
    with pytest.raises(DataError, match=r"Subject 's1' has no file for \[MR\], the section whose "
                                        r"grid all others share"):
        Preprocessor(_specs())(subject)


def test_missing_file_of_a_subject(subject, tmp_path):
    subject.paths["MR"] = str(tmp_path / "gone.nii.gz")
    with pytest.raises(DataError, match=r"image file '.*gone\.nii\.gz' does not exist"):
        Preprocessor(_specs())(subject)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "label", "interp_order": 3}, r"\[LABEL\] holds labels.*interp_order = 0"),
    ({"interp_order": 7}, r"`interp_order` of section \[LABEL\]\. Expected an integer "
                          r"from 0 to 5\. Received interp_order=7"),
    ({"match_space": "warp"}, r"`match_space` of section \[LABEL\]\. Expected one of check, "
                              r"resample"),
    ({"foreground_type": "threshold"}, r"needs `foreground_threshold`"),
    ({"intensity_window": (100, -100)}, r"`intensity_window`.*with lo < hi\. Received "
                                        r"intensity_window=\(100, -100\)"),
    ({"percentile_clip": (1, 101)}, r"`percentile_clip`.*Item 2 \(101\) is not a number "
                                    r"from 0 to 100"),
    ({"normalisation": "histogram", "cutoff": (0.2, 0.99)}, r"argument `cutoff`"),
])
def test_section_settings_are_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SectionSpec("LABEL", **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"pixdim": (1, 0, 1)}, r"argument `pixdim`. Expected three positive"),
    ({"axcodes": "RAX"}, r"argument `axcodes`"),
    ({"volume_padding_size": (1, 1)}, r"argument `volume_padding_size`"),
    ({"volume_padding_mode": "wrap"}, r"argument `volume_padding_mode`. Expected one of constant"),
    ({"reference_section": "CT"}, r"argument `reference_section`"),
])
def test_grid_settings_are_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Preprocessor(_specs(), **kwargs)


def test_histogram_needs_a_reference_file():
    with pytest.raises(ConfigError, match=r"\['MR'\] use normalisation = histogram, which needs "
                                          r"`histogram_ref_file`"):
        Preprocessor([SectionSpec("MR", normalisation="histogram")])


def test_mask_section_must_exist():
    with pytest.raises(ConfigError, match=r"\[MR\] `foreground_type`.*Received "
                                          r"foreground_type='BODY'"):
        Preprocessor(_specs(foreground_type="BODY"))


# Resampling ------------------------------------------------------------------------------

@pytest.mark.parametrize("order", range(6))
def test_separable_zoom_equals_scipy_affine_transform(order):
    data = np.random.default_rng(order).normal(size=(9, 7, 5)).astype(np.float32)
    if order == 0:
        data = (data * 10).astype(np.int16)
    scale = np.array([0.7, 1.6, 1.0])
    offset = 0.5 * scale - 0.5 + np.array([0.0, 0.0, 0.3])
    out = zoom(data[..., None], scale, offset, (13, 4, 5), order)[..., 0]
    expected = ndimage.affine_transform(data, scale, offset, output_shape=(13, 4, 5),
                                        order=order, mode="nearest", prefilter=order > 1)
    assert out.dtype == (np.int16 if order == 0 else np.float32)
    assert np.allclose(out, expected, atol=1e-5)


@pytest.mark.slow
def test_preprocessing_speed_of_a_256x256x128_volume():
    """Cubic resampling of image + label to 1 mm, z-score, padding: seconds, not minutes."""
    affine = np.array([[0, 0, -1.0, 100], [-0.9, 0, 0, 30], [0, 2.0, 0, -7], [0, 0, 0, 1]])
    image = np.random.default_rng(0).normal(size=(256, 256, 128)).astype(np.float32)
    images = {"MR": Image(image[..., None], affine, "mr"),
              "LABEL": Image((image > 0)[..., None].astype(np.uint8), affine, "label")}
    preprocessor = Preprocessor(_specs(normalisation="zscore", foreground_type="otsu"),
                                pixdim=(1, 1, 1), axcodes="RAS", volume_padding_size=(8, 8, 8))
    start = time.perf_counter()
    processed = preprocessor.process("big", images)
    middle = time.perf_counter()
    undo(processed.arrays["MR"], processed.record, 3)
    end = time.perf_counter()
    print(f"process {middle - start:.2f} s, undo {end - middle:.2f} s")
    assert middle - start < 30 and end - middle < 30

