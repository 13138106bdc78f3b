"""Augmentation: one map for every section, exact flips, labels kept, images only for
intensity, determinism, and agreement with an independent (scipy) resampling."""

import numpy as np
import pytest
from scipy import ndimage

from sfg_app.data.augmentation import (Augmenter, IntensityAugmentation, SpatialAugmentation,
                                       _bspline_basis)
from sfg_app.errors import ConfigError

STRONG = dict(rotation_angle=(-25, 25), scaling_percentage=(-15, 15),
              do_elastic_deformation=True, num_ctrl_points=4, deformation_sigma=2.0,
              proportion_to_deform=1.0)


def _blocks(shape=(24, 22, 20)):
    """A label volume of large blocks with labels {0, 3, 7}, and an image equal to it."""
    labels = np.zeros((*shape, 1), np.int16)
    labels[4:14, 3:12, 2:15] = 3
    labels[12:22, 10:20, 8:18] = 7
    return {"IMG": labels.astype(np.float32), "LAB": labels}


def test_flips_are_exact_reversals():
    volume = np.random.default_rng(0).standard_normal((6, 5, 4, 2)).astype(np.float32)
    augmenter = Augmenter(spatial=SpatialAugmentation(random_flipping_axes=(0, 2),
                                                      flip_probability=1.0))
    out = augmenter({"V": volume}, np.random.default_rng(0))["V"]
    np.testing.assert_array_equal(out, volume[::-1, :, ::-1])
    window = augmenter.window({"V": volume}, [1, 1, 0, 5, 4, 4], np.random.default_rng(0))
    np.testing.assert_array_equal(window["V"], volume[1:5, 1:4][::-1, :, ::-1])


def test_flips_folded_into_an_interpolated_map_equal_reversals():
    volume = np.random.default_rng(1).standard_normal((12, 11, 10, 1)).astype(np.float32)
    common = dict(rotation_angle=(-20, 20), do_elastic_deformation=True,
                  deformation_sigma=1.5, proportion_to_deform=1.0)
    flipped = Augmenter(spatial=SpatialAugmentation(
        random_flipping_axes=(0, 1, 2), flip_probability=1.0, **common))
    plain = Augmenter(spatial=SpatialAugmentation(**common))
    out = flipped({"V": volume}, np.random.default_rng(5))["V"]
    rng = np.random.default_rng(5)
    rng.random(3)  # the three flip draws
    reference = plain({"V": volume}, rng)["V"]
    np.testing.assert_allclose(out, reference[::-1, ::-1, ::-1], atol=1e-5)


def test_spatial_map_matches_scipy_resampling_of_the_same_draw():
    volume = np.random.default_rng(2).standard_normal((30, 28, 26, 2)).astype(np.float32)
    labels = np.random.default_rng(3).integers(0, 5, (30, 28, 26, 1)).astype(np.uint8)
    spatial = SpatialAugmentation(**STRONG)
    augmenter = Augmenter(spatial=spatial, label_sections=("LAB",))
    location = np.array([4, 2, 3, 20, 18, 19])
    out = augmenter.window({"IMG": volume, "LAB": labels}, location, np.random.default_rng(7))
    draw = spatial.draw(np.random.default_rng(7), (16, 16, 16))
    centre = np.full(3, 7.5)
    grid = np.indices((16, 16, 16)).reshape(3, -1).astype(np.float64)
    basis = [_bspline_basis(16, n) for n in draw.elastic.shape[:3]]
    field = np.einsum("xi,yj,zk,ijkd->xyzd", *basis, draw.elastic).reshape(-1, 3).T
    coords = location[:3, None] + centre[:, None] + draw.matrix @ (grid - centre[:, None]) + field
    for channel in range(2):
        reference = ndimage.map_coordinates(volume[..., channel], coords, order=1,
                                            mode="grid-constant").reshape(16, 16, 16)
        np.testing.assert_allclose(out["IMG"][..., channel], reference, atol=1e-4)
    nearest = ndimage.map_coordinates(labels[..., 0], coords, order=0,
                                      mode="grid-constant").reshape(16, 16, 16)
    assert np.mean(out["LAB"][..., 0] == nearest) > 0.999  # ties at .5 may round apart
    assert out["LAB"].dtype == np.uint8


def test_labels_stay_in_their_label_set():
    subject = _blocks()
    augmenter = Augmenter(spatial=SpatialAugmentation(**STRONG), label_sections=("LAB",))
    for seed in range(5):
        out = augmenter(subject, np.random.default_rng(seed))
        assert set(np.unique(out["LAB"])) <= {0, 3, 7}
        assert out["LAB"].shape == subject["LAB"].shape


def test_image_and_label_stay_aligned():
    # The image equals the label volume: a voxel whose interpolated image value is
    # exactly a label read eight equal neighbours, so nearest must give that label too.
    subject = _blocks()
    augmenter = Augmenter(spatial=SpatialAugmentation(random_flipping_axes=(0, 1),
                                                      **STRONG),
                          image_sections=("IMG",), label_sections=("LAB",))
    for seed in range(4):
        out = augmenter(subject, np.random.default_rng(seed))
        image, labels = out["IMG"][..., 0], out["LAB"][..., 0].astype(np.float32)
        interior = np.isin(image, [0, 3, 7])
        assert interior.mean() > 0.8
        np.testing.assert_array_equal(labels[interior], image[interior])
        shifted = np.roll(labels, 1, axis=seed % 3)  # one voxel off is caught
        assert np.sum(shifted[interior] != image[interior]) > 50


def test_intensity_touches_image_sections_only():
    rng = np.random.default_rng(4)
    subject = {"MR": rng.random((10, 9, 8, 2)).astype(np.float32) + 1,
               "CT": rng.random((10, 9, 8, 1)).astype(np.float32),
               "LAB": rng.integers(0, 3, (10, 9, 8, 1)).astype(np.int32),
               "AGE": np.array([42.0], np.float32)}
    augmenter = Augmenter(intensity=IntensityAugmentation(
        bias_field_range=(-0.5, 0.5), gamma_range=(0.5, 2.0), noise_std=0.1),
        image_sections=("MR",), label_sections=("LAB",))
    out = augmenter(subject, np.random.default_rng(0))
    assert not np.allclose(out["MR"], subject["MR"])
    for name in ("CT", "LAB", "AGE"):
        np.testing.assert_array_equal(out[name], subject[name])
    assert out["MR"].dtype == np.float32


def test_gamma_keeps_each_channel_range_and_gamma_one_is_identity():
    window = np.random.default_rng(5).standard_normal((8, 8, 8, 2)).astype(np.float32)
    gamma = IntensityAugmentation(gamma_range=(2.0, 2.0))
    out = gamma.apply(gamma.draw(np.random.default_rng(0)), window.copy())
    for c in range(2):
        assert out[..., c].min() == pytest.approx(window[..., c].min(), abs=1e-5)
        assert out[..., c].max() == pytest.approx(window[..., c].max(), abs=1e-5)
    assert np.all(np.diff(out[..., 0].ravel()[np.argsort(window[..., 0].ravel())]) >= -1e-5)
    same = IntensityAugmentation(gamma_range=(1.0, 1.0))
    np.testing.assert_allclose(same.apply(same.draw(np.random.default_rng(0)), window.copy()),
                               window, atol=1e-5)


def test_bias_field_is_smooth_positive_and_zero_range_is_identity():
    ones = np.ones((16, 16, 1, 1), np.float32)
    bias = IntensityAugmentation(bias_field_range=(-0.5, 0.5), bf_order=3)
    field = bias.apply(bias.draw(np.random.default_rng(1)), ones.copy())[..., 0, 0]
    assert field.min() > 0 and not np.allclose(field, 1)
    # the log of the field is a polynomial of degree 3 along each axis
    np.testing.assert_allclose(np.diff(np.log(field), n=4, axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.diff(np.log(field), n=4, axis=1), 0, atol=1e-4)
    flat = IntensityAugmentation(bias_field_range=(0, 0))
    np.testing.assert_array_equal(flat.apply(flat.draw(np.random.default_rng(1)), ones.copy()),
                                  ones)


def test_noise_has_the_standard_deviation_asked_for():
    noise = IntensityAugmentation(noise_std=0.5)
    out = noise.apply(noise.draw(np.random.default_rng(2)), np.zeros((40, 40, 40, 1), np.float32))
    assert abs(out.mean()) < 0.005 and abs(out.std() - 0.5) < 0.005
    other = noise.apply(noise.draw(np.random.default_rng(2)), np.zeros((40, 40, 40, 1),
                                                                       np.float32), stream=1)
    assert abs(np.corrcoef(out.ravel(), other.ravel())[0, 1]) < 0.01  # sections differ


def test_a_noise_range_as_the_config_gives_it_draws_a_standard_deviation_per_window():
    """[TRAINING] noise_std is a range: each window gets a std drawn from it."""
    zeros = np.zeros((30, 30, 30, 1), np.float32)
    noise = IntensityAugmentation(noise_std=(0.1, 0.6))
    rng = np.random.default_rng(3)
    stds = [float(noise.apply(noise.draw(rng), zeros.copy()).std()) for _ in range(8)]
    assert all(0.09 < s < 0.61 for s in stds) and max(stds) - min(stds) > 0.1
    fixed, pair = IntensityAugmentation(noise_std=0.5), IntensityAugmentation(noise_std=(0.5, 0.5))
    np.testing.assert_array_equal(fixed.apply(fixed.draw(np.random.default_rng(2)), zeros.copy()),
                                  pair.apply(pair.draw(np.random.default_rng(2)), zeros.copy()))
    off = IntensityAugmentation(gamma_range=(1.0, 1.0), noise_std=None)  # gamma alone
    assert off.draw(np.random.default_rng(0)).noise_std == 0.0


def test_same_seed_same_window_other_seed_other_window():
    subject = _blocks()
    subject["IMG"] = subject["IMG"] + np.random.default_rng(0).random(subject["IMG"].shape,
                                                                    np.float32)
    augmenter = Augmenter(spatial=SpatialAugmentation(random_flipping_axes=(0,), **STRONG),
                          intensity=IntensityAugmentation(gamma_range=(0.7, 1.4), noise_std=0.1),
                          image_sections=("IMG",), label_sections=("LAB",))
    location = [2, 2, 2, 18, 18, 14]
    first = augmenter.window(subject, location, np.random.default_rng(11))
    again = augmenter.window(subject, location, np.random.default_rng(11))
    other = augmenter.window(subject, location, np.random.default_rng(12))
    for name in ("IMG", "LAB"):
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["IMG"], other["IMG"])


def test_planar_windows_are_transformed_in_plane_only():
    image = np.random.default_rng(6).standard_normal((20, 18, 1, 1)).astype(np.float32)
    spatial = SpatialAugmentation(random_flipping_axes=(0, 1, 2), **STRONG)
    draw = spatial.draw(np.random.default_rng(0), (12, 12, 1))
    assert 2 not in draw.active_axes()
    low, high = draw.source_box([4, 3, 0])
    assert (low[2], high[2]) == (0, 1)  # no padding along z: the slice is read as is
    out = Augmenter(spatial=spatial).window({"I": image}, [4, 3, 0, 16, 15, 1],
                                            np.random.default_rng(0))
    assert out["I"].shape == (12, 12, 1, 1) and np.isfinite(out["I"]).all()


def test_windows_reaching_past_the_volume_read_zeros():
    volume = np.ones((6, 6, 6, 1), np.float32)
    augmenter = Augmenter(spatial=SpatialAugmentation(rotation_angle=(30, 30)))
    out = augmenter.window({"V": volume}, [-4, -4, -4, 4, 4, 4], np.random.default_rng(0))
    assert out["V"][0, 0, 0, 0] == 0 and out["V"][-1, -1, -1, 0] == pytest.approx(1)


def test_per_subject_values_pass_through():
    subject = {"V": np.zeros((4, 4, 4, 1), np.float32), "AGE": np.array([3.0, 4.0])}
    out = Augmenter(spatial=SpatialAugmentation(rotation_angle=(-5, 5)))(
        subject, np.random.default_rng(0))
    assert out["AGE"] is subject["AGE"]


@pytest.mark.parametrize("arguments, message", [
    (dict(rotation_angle=(10, -10)), r"`rotation_angle`.*low <= high.*\(10, -10\)"),
    (dict(scaling_percentage=(-120, 10)), r"`scaling_percentage`.*above -100"),
    (dict(random_flipping_axes=(3,)), r"`random_flipping_axes`.*0, 1, 2.*\(3,\)"),
    (dict(flip_probability=1.5), r"`flip_probability`.*<= 1.*1\.5"),
    (dict(num_ctrl_points=1), r"`num_ctrl_points`.*integer >= 2.*=1"),
    (dict(deformation_sigma=-1.0), r"`deformation_sigma`.*>= 0"),
])
def test_spatial_arguments_are_checked(arguments, message):
    with pytest.raises(ConfigError, match=message):
        SpatialAugmentation(**arguments)


@pytest.mark.parametrize("arguments, message", [
    (dict(gamma_range=(0.0, 1.5)), r"`gamma_range`.*above 0"),
    (dict(bias_field_range=(1,)), r"`bias_field_range`.*\(low, high\)"),
    (dict(noise_std=-0.1), r"`noise_std`.*>= 0"),
    (dict(bf_order=1.5), r"`bf_order`.*integer"),
])
def test_intensity_arguments_are_checked(arguments, message):
    with pytest.raises(ConfigError, match=message):
        IntensityAugmentation(**arguments)


def test_a_section_cannot_be_image_and_label():
    with pytest.raises(ConfigError, match=r"\['X'\].*both"):
        Augmenter(image_sections=("X",), label_sections=("X", "Y"))


def test_bspline_weights_partition_unity():
    for length, count in [(16, 4), (96, 6), (7, 9)]:
        basis = _bspline_basis(length, count)
        np.testing.assert_allclose(basis.sum(axis=1), 1, atol=1e-12)
        assert basis.min() >= 0


@pytest.mark.parametrize("window", [(1, 6, 6), (6, 1, 6), (1, 1, 1), (6, 6, 1)])
def test_windows_with_sides_of_one_voxel(window):
    volume = np.random.default_rng(7).standard_normal((8, 8, 8, 1)).astype(np.float32)
    labels = (volume > 0).astype(np.int32)
    augmenter = Augmenter(spatial=SpatialAugmentation(random_flipping_axes=(0, 1, 2), **STRONG),
                          intensity=IntensityAugmentation(bias_field_range=(-0.2, 0.2),
                                                          gamma_range=(0.8, 1.2), noise_std=0.1),
                          image_sections=("V",), label_sections=("L",))
    location = [1, 1, 1] + [1 + w for w in window]
    out = augmenter.window({"V": volume, "L": labels}, location, np.random.default_rng(0))
    assert out["V"].shape == (*window, 1) and np.isfinite(out["V"]).all()
    assert set(np.unique(out["L"])) <= {0, 1}
