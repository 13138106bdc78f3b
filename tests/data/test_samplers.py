"""Window samplers: argument checks, padding, map-driven draws, the grid and resizing."""

import numpy as np
import pytest
from scipy import stats

from sfg_app.data.samplers import (BalancedSampler, GridSampler, ResizeSampler,
                                   UniformSampler, WeightedSampler, crop, resize)
from sfg_app.errors import ConfigError, DataError
from sfg_app.registry import SAMPLERS


def _subject(shape=(10, 8, 6), channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"MR": rng.standard_normal((*shape, channels)).astype(np.float32),
            "LABEL": rng.integers(0, 3, (*shape, 1)).astype(np.int16)}


def test_registry_names_build_the_samplers():
    for name, cls in [("uniform", UniformSampler), ("weighted", WeightedSampler),
                      ("balanced", BalancedSampler), ("resize", ResizeSampler)]:
        sampler = SAMPLERS.get(name)((4, 4, 1), sampling_map="LABEL")
        assert isinstance(sampler, cls)


@pytest.mark.parametrize("size, message", [
    ((0, 4, 4), r"`spatial_window_size`.*strictly positive.*\(0, 4, 4\)"),
    ((4, 4), r"`spatial_window_size`.*three.*Received spatial_window_size=\(4, 4\)"),
    ((4.5, 4, 4), r"`spatial_window_size`.*integers"),
])
def test_bad_window_size_names_the_argument(size, message):
    with pytest.raises(ConfigError, match=message):
        UniformSampler(size)


def test_map_samplers_need_a_sampling_map():
    with pytest.raises(ConfigError, match=r"`sampling_map`.*Received sampling_map=None"):
        BalancedSampler((4, 4, 4))


def test_sections_of_different_shapes_are_a_data_error():
    subject = {"MR": np.zeros((8, 8, 4, 1), np.float32), "CT": np.zeros((8, 8, 5, 1), np.float32)}
    with pytest.raises(DataError, match=r"one spatial shape.*MR: \(8, 8, 4\), CT: \(8, 8, 5\)"):
        UniformSampler((4, 4, 4)).prepare(subject)


def test_a_three_dimensional_array_is_rejected_with_its_shape():
    with pytest.raises(DataError, match=r"Section 'MR' .* shape \(8, 8, 4\).*channels last"):
        UniformSampler((4, 4, 4)).prepare({"MR": np.zeros((8, 8, 4))})


def test_uniform_windows_stay_inside_the_volume_and_reach_every_start():
    rng = np.random.default_rng(0)
    locations = UniformSampler((4, 3, 2)).locations(_subject(), 2000, rng)
    assert locations.shape == (2000, 6)
    np.testing.assert_array_equal(locations[:, 3:] - locations[:, :3], [[4, 3, 2]] * 2000)
    # Every start from 0 to (volume - window) along each axis, and nothing else.
    for axis, last_start in enumerate((10 - 4, 8 - 3, 6 - 2)):
        assert sorted(set(locations[:, axis].tolist())) == list(range(last_start + 1)), axis


def test_a_window_larger_than_the_volume_is_centred_and_padded_with_zeros():
    subject = {"MR": np.arange(1, 5 * 7 + 1, dtype=np.float32).reshape(5, 7, 1, 1)}
    location = UniformSampler((8, 8, 1)).locations(subject, 1, np.random.default_rng(0))[0]
    assert location.tolist() == [-2, -1, 0, 6, 7, 1]
    window = crop(subject["MR"], location[:3], location[3:])
    assert window.shape == (8, 8, 1, 1)
    np.testing.assert_array_equal(window[2:7, 1:8], subject["MR"])
    assert window.sum() == subject["MR"].sum()  # zeros everywhere else


def test_crop_off_every_side_pads_and_keeps_the_dtype():
    volume = np.arange(27, dtype=np.int16).reshape(3, 3, 3, 1)
    box = crop(volume, (-1, 1, 2), (2, 5, 4))
    assert box.dtype == np.int16 and box.shape == (3, 4, 2, 1)
    np.testing.assert_array_equal(box[1:, :2, 0], volume[0:2, 1:3, 2])
    assert box[0].sum() == 0 and box[:, 2:].sum() == 0 and box[:, :, 1].sum() == 0


def test_crop_entirely_outside_is_all_zero():
    assert crop(np.ones((3, 3, 3, 1)), (5, 5, 5), (7, 7, 7)).sum() == 0


def test_weighted_map_with_one_voxel_is_deterministic():
    weights = np.zeros((12, 10, 8, 1), np.float32)
    weights[6, 2, 7] = 1  # near the y and z borders: the window is moved inside
    subject = {"MR": np.zeros((12, 10, 8, 1), np.float32), "MAP": weights}
    locations = WeightedSampler((4, 4, 4), sampling_map="MAP").locations(
        subject, 50, np.random.default_rng(1))
    assert {tuple(row) for row in locations.tolist()} == {(4, 0, 4, 8, 4, 8)}


def test_weighted_map_with_two_values_gives_their_ratio():
    # Windows of one voxel: the location is the drawn voxel.
    weights = np.ones((16, 16, 1, 1), np.float32)
    weights[8:] = 3.0  # half the voxels three times as likely: 3 / 4 of the draws
    locations = WeightedSampler((1, 1, 1), sampling_map="MAP").locations(
        {"MAP": weights}, 8000, np.random.default_rng(2))
    high = int(np.sum(locations[:, 0] >= 8))
    assert stats.binomtest(high, 8000, 0.75).pvalue > 1e-3
    # and uniform within each half
    counts = np.bincount(locations[:, 0], minlength=16)
    assert stats.chisquare(counts[8:]).pvalue > 1e-3


def test_weighted_map_must_be_finite_non_negative_and_not_all_zero():
    sampler = WeightedSampler((2, 2, 1), sampling_map="MAP")
    with pytest.raises(DataError, match=r"'MAP' must be finite and non-negative.*-1\.0"):
        sampler.prepare({"MAP": -np.ones((4, 4, 1, 1), np.float32)})
    with pytest.raises(DataError, match=r"'MAP' is zero everywhere.*uniform"):
        sampler.prepare({"MAP": np.zeros((4, 4, 1, 1), np.float32)})
    with pytest.raises(DataError, match=r"'MAP' is missing.*has \['MR'\]"):
        sampler.prepare({"MR": np.zeros((4, 4, 1, 1), np.float32)})
    with pytest.raises(DataError, match=r"one channel.*\(4, 4, 1, 2\)"):
        sampler.prepare({"MAP": np.ones((4, 4, 1, 2), np.float32)})


def test_balanced_classes_are_equally_likely():
    labels = np.zeros((20, 20, 5, 1), np.int32)  # background 1944 voxels
    labels[2:12, 2:7, :] = 4  # 250 voxels
    labels[15, 15, 2] = 9  # one voxel
    locations = BalancedSampler((1, 1, 1), sampling_map="LABEL").locations(
        {"LABEL": labels}, 6000, np.random.default_rng(3))
    drawn = labels[locations[:, 0], locations[:, 1], locations[:, 2], 0]
    counts = [np.sum(drawn == c) for c in (0, 4, 9)]
    assert sum(counts) == 6000
    assert stats.chisquare(counts).pvalue > 1e-3


def test_balanced_skips_classes_absent_from_the_volume():
    labels = np.zeros((10, 10, 1, 1), np.float32)  # floats holding integers are fine
    labels[:2] = 5.0
    locations = BalancedSampler((1, 1, 1), sampling_map="LABEL").locations(
        {"LABEL": labels}, 4000, np.random.default_rng(4))
    share = np.mean(labels[locations[:, 0], locations[:, 1], 0, 0] == 5)
    assert abs(share - 0.5) < 0.03


def test_balanced_rejects_non_integer_labels():
    with pytest.raises(DataError, match=r"integer class labels.*0\.5.*weighted"):
        BalancedSampler((2, 2, 1), sampling_map="LABEL").prepare(
            {"LABEL": np.full((4, 4, 1, 1), 0.5, np.float32)})


def test_balanced_window_contains_the_drawn_class_near_the_border():
    labels = np.zeros((16, 16, 16, 1), np.uint8)
    labels[0, 15, 0] = 1
    sampler = BalancedSampler((6, 6, 6), sampling_map="LABEL")
    for location in sampler.locations({"LABEL": labels}, 200, np.random.default_rng(5)):
        window = crop(labels, location[:3], location[3:])
        assert window.shape == (6, 6, 6, 1)
    locations = sampler.locations({"LABEL": labels}, 400, np.random.default_rng(6))
    hits = [crop(labels, l[:3], l[3:]).max() for l in locations]
    assert 0.35 < np.mean(hits) < 0.65  # class 1 drawn half the time, always inside


def test_grid_starts_for_a_hand_computed_axis():
    plan = GridSampler((4, 1, 1), border=(1, 0, 0)).plan((6, 1, 1))
    assert plan.starts[0].tolist() == [-1, 1, 3]
    assert [plan.owned_box(l)[0][0] for l in plan.locations] == [0, 2, 4]
    assert [plan.owned_box(l)[1][0] for l in plan.locations] == [2, 4, 6]


@pytest.mark.parametrize("shape, window, border", [
    ((7, 5, 3), (4, 3, 3), (1, 1, 1)),
    ((9, 9, 1), (4, 4, 1), (0, 0, 0)),
    ((3, 3, 1), (8, 8, 1), (2, 2, 0)),  # window larger than the volume
    ((11, 2, 4), (5, 5, 2), (2, 1, 0)),
])
def test_crop_boxes_partition_the_volume_inside_window_centres(shape, window, border):
    plan = GridSampler(window, border).plan(shape)
    cover = np.zeros(shape, int)
    for location in plan.locations:
        start, stop = plan.owned_box(location)
        assert np.all(start >= location[:3] + border)
        assert np.all(stop <= location[3:] - border)
        cover[tuple(slice(a, b) for a, b in zip(start, stop))] += 1
    np.testing.assert_array_equal(cover, 1)


def test_grid_border_must_leave_a_step():
    with pytest.raises(ConfigError,
                       match=r"`border`.*border < window / 2.*axis 2 allows at most 1"):
        GridSampler((8, 8, 4), border=(2, 2, 2))
    with pytest.raises(ConfigError, match=r"`border`.*axis 2 allows at most 0"):
        GridSampler((8, 8, 1), border=(2, 2, 1))


def test_grid_batches_cover_the_plan_and_pad_outside():
    subject = _subject((5, 4, 1), channels=1)
    plan = GridSampler((4, 4, 1), border=(1, 1, 0)).plan(subject)
    batches = list(plan.batches(subject, batch_size=3))
    assert [len(locations) for _, locations in batches] == [3, 3]
    for batch, locations in batches:
        assert batch["MR"].shape == (len(locations), 4, 4, 1, 1)
        assert batch["LABEL"].dtype == np.int16
    assert np.concatenate([l for _, l in batches]).tolist() == plan.locations.tolist()
    first, location = batches[0][0]["MR"][0], batches[0][1][0]
    assert location.tolist() == [-1, -1, 0, 3, 3, 1]
    assert first[0].sum() == 0 and first[:, 0].sum() == 0  # outside the volume
    np.testing.assert_array_equal(first[1:, 1:], subject["MR"][:3, :3])
    with pytest.raises(ValueError, match=r"`batch_size`.*Received batch_size=0"):
        next(plan.batches(subject, 0))


def test_resize_sampler_windows_are_whole_volumes_resized():
    subject = _subject((12, 9, 6))
    subject["LABEL"][:] = 7
    subject["LABEL"][:6] = 2
    plan = ResizeSampler((6, 6, 6), label_sections=("LABEL",)).prepare(subject)
    assert plan.arrays["MR"].shape == (6, 6, 6, 2)
    assert set(np.unique(plan.arrays["LABEL"])) == {2, 7}
    np.testing.assert_array_equal(plan.arrays["LABEL"][:3, ..., 0], 2)
    np.testing.assert_array_equal(plan.arrays["LABEL"][3:, ..., 0], 7)
    assert plan.draw(3, np.random.default_rng(0)).tolist() == [[0, 0, 0, 6, 6, 6]] * 3


def test_resize_is_undone_by_resizing_back():
    volume = np.repeat(np.arange(4, dtype=np.float32), 3).reshape(12, 1, 1, 1)
    small = resize(volume, (4, 1, 1), order=1)
    np.testing.assert_allclose(small[:, 0, 0, 0], [0, 1, 2, 3])
    back = resize(small, (12, 1, 1), order=0)
    np.testing.assert_array_equal(back, volume)
