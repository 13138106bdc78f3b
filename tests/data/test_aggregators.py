"""Grid inference aggregation: hand-computed blends, identity round trips, outputs."""

import tracemalloc

import numpy as np
import pytest

from sfg_app.data.aggregators import ImageAggregator, VoxelAggregator, window_weights
from sfg_app.data.samplers import GridSampler, ResizeSampler
from sfg_app.errors import ConfigError

# A 4 x 4 image, windows of 4 x 4 with a border of 1: a 2 x 2 grid of windows starting
# at -1 and 1 along each axis, neighbours overlapping by 2 voxels.
PLAN = GridSampler((4, 4, 1), border=(1, 1, 0)).plan((4, 4, 1))


def _window_id_network(plan, aggregator):
    """Each window's output is its position in the plan (1, 2, 3, 4) everywhere."""
    for k, location in enumerate(plan.locations, start=1):
        aggregator.add(np.full((1, *plan.window_size, 1), k, np.float32), location[None])
    return aggregator.result()[:, :, 0, 0]


def test_crop_takes_each_voxel_from_the_centre_of_one_window():
    result = _window_id_network(PLAN, VoxelAggregator(PLAN, channels=1, blending="crop"))
    np.testing.assert_array_equal(result, [[1, 1, 2, 2],
                                           [1, 1, 2, 2],
                                           [3, 3, 4, 4],
                                           [3, 3, 4, 4]])


def test_constant_averages_every_window_over_the_voxel():
    result = _window_id_network(PLAN, VoxelAggregator(PLAN, channels=1, blending="constant"))
    np.testing.assert_allclose(result, [[1.0, 1.5, 1.5, 2.0],
                                        [2.0, 2.5, 2.5, 3.0],
                                        [2.0, 2.5, 2.5, 3.0],
                                        [3.0, 3.5, 3.5, 4.0]], rtol=1e-6)


def test_gaussian_down_weights_the_window_borders():
    # sigma = 0.125 * 4 = 0.5; window positions -1.5, -0.5, 0.5, 1.5 from the centre give
    # weights e^-4.5, e^-0.5, e^-0.5, e^-4.5. Voxel 1 lies at position 2 of the first
    # window (e^-0.5) and 0 of the second (e^-4.5): the second window's share there is
    # a = 1 / (1 + e^4); at voxel 2 it is 1 - a; voxels 0 and 3 see one window each.
    a = 1 / (1 + np.exp(4.0))
    share = np.array([0.0, a, 1 - a, 1.0])  # of the second window along an axis
    expected = 1 + 2 * share[:, None] + share[None, :]
    result = _window_id_network(PLAN, VoxelAggregator(PLAN, channels=1, blending="gaussian"))
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def _identity(volume, plan, aggregator, batch_size=3):
    for batch, locations in plan.batches({"x": volume}, batch_size):
        aggregator.add(batch["x"], locations)
    return aggregator.result()


@pytest.mark.parametrize("shape, window, border", [
    ((9, 7, 5), (4, 4, 3), (1, 1, 1)),
    ((6, 5, 1), (8, 8, 1), (2, 2, 0)),
    ((10, 3, 4), (3, 3, 3), (0, 0, 0)),
])
@pytest.mark.parametrize("blending", ["crop", "constant", "gaussian"])
def test_identity_network_reproduces_the_volume(shape, window, border, blending):
    rng = np.random.default_rng(0)
    volume = rng.integers(-50, 50, (*shape, 2)).astype(np.float32)
    plan = GridSampler(window, border).plan(shape)
    result = _identity(volume, plan, VoxelAggregator(plan, channels=2, blending=blending))
    assert result.dtype == np.float32 and result.shape == volume.shape
    if blending == "gaussian":
        np.testing.assert_allclose(result, volume, rtol=1e-6, atol=1e-5)
    else:
        np.testing.assert_array_equal(result, volume)


@pytest.mark.parametrize("blending", ["crop", "constant", "gaussian"])
def test_labels_are_the_argmax_of_blended_probabilities(blending):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (9, 8, 3))
    one_hot = np.eye(4, dtype=np.float32)[labels]
    plan = GridSampler((4, 4, 3), border=(1, 1, 1)).plan(labels.shape)
    result = _identity(one_hot, plan,
                       VoxelAggregator(plan, channels=4, output="labels", blending=blending))
    assert result.dtype == np.int32 and result.shape == (9, 8, 3, 1)
    np.testing.assert_array_equal(result[..., 0], labels)


def test_crop_labels_hold_no_float_buffer_per_class():
    classes, shape = 16, (64, 64, 16)
    plan = GridSampler((32, 32, 16), border=(4, 4, 0)).plan(shape)
    window = np.zeros((1, 32, 32, 16, classes), np.float32)
    window[..., 3] = 1
    tracemalloc.start()
    aggregator = VoxelAggregator(plan, channels=classes, output="labels", blending="crop")
    for location in plan.locations:
        aggregator.add(window, location[None])
    result = aggregator.result()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.all(result == 3)
    full_buffer = np.prod(shape) * classes * 4  # 4 MiB
    assert peak < full_buffer / 3, peak


@pytest.mark.parametrize("blending", ["crop", "constant", "gaussian"])
def test_blended_probabilities_sum_to_one(blending):
    rng = np.random.default_rng(2)
    plan = GridSampler((5, 5, 3), border=(2, 1, 1)).plan((11, 9, 4))
    aggregator = VoxelAggregator(plan, channels=3, output="probabilities", blending=blending)
    for location in plan.locations:  # windows disagree with each other
        logits = rng.standard_normal((1, 5, 5, 3, 3))
        probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        aggregator.add(probabilities.astype(np.float32), location[None])
    result = aggregator.result()
    np.testing.assert_allclose(result.sum(-1), 1, rtol=1e-5)
    assert result.min() >= 0


def test_image_level_outputs_are_averaged_over_windows():
    aggregator = ImageAggregator(PLAN, channels=2)
    locations = PLAN.locations
    aggregator.add(np.array([[1, 10], [2, 20], [3, 30]], np.float32), locations[:3])
    aggregator.add(np.array([[6, 60]], np.float32), locations[3:])
    np.testing.assert_allclose(aggregator.result(), [3.0, 30.0])


def test_resize_plan_outputs_return_to_the_volume_shape():
    sampler = ResizeSampler((4, 4, 1))
    plan = sampler.inference_plan((8, 12, 1))
    volume = np.zeros((8, 12, 1, 2), np.float32)
    volume[:4, ..., 0] = 1
    volume[4:, ..., 1] = 1
    ((batch, locations),) = plan.batches({"x": volume})
    assert batch["x"].shape == (1, 4, 4, 1, 2)
    labels = VoxelAggregator(plan, channels=2, output="labels")
    labels.add(batch["x"], locations)
    np.testing.assert_array_equal(labels.result()[..., 0], volume[..., 1])
    values = VoxelAggregator(plan, channels=2, output="values")
    values.add(batch["x"], locations)
    assert values.result().shape == (8, 12, 1, 2)
    image = ImageAggregator(plan, channels=1)
    image.add(np.array([[5.0]]), locations)
    assert image.result().tolist() == [5.0]


def test_window_weights_are_positive_and_peak_at_the_centre():
    weights = window_weights((7, 6, 1), "gaussian")
    assert weights.shape == (7, 6, 1) and weights.min() >= 1e-6
    assert weights[3, 2, 0] == weights[3, 3, 0] == weights.max() == 1.0
    np.testing.assert_array_equal(window_weights((3, 3, 3), "constant"), 1)


def test_misuse_is_reported_with_the_values():
    with pytest.raises(ConfigError, match=r"`blending`.*crop, constant, gaussian.*'mean'"):
        VoxelAggregator(PLAN, channels=1, blending="mean")
    with pytest.raises(ConfigError, match=r"`output`.*'argmax'"):
        VoxelAggregator(PLAN, channels=2, output="argmax")
    with pytest.raises(ConfigError, match=r"`channels`.*at least 2.*channels=1"):
        VoxelAggregator(PLAN, channels=1, output="labels")
    aggregator = VoxelAggregator(PLAN, channels=1)
    with pytest.raises(ValueError, match=r"shape \(1, 4, 4, 1, 1\).*Received shape \(1, 4, 4, 1\)"):
        aggregator.add(np.zeros((1, 4, 4, 1)), PLAN.locations[:1])
    with pytest.raises(ValueError, match=r"not a window of this grid"):
        VoxelAggregator(PLAN, channels=1, blending="crop").add(
            np.zeros((1, 4, 4, 1, 1)), [[0, 0, 0, 4, 4, 1]])
    aggregator.add(np.zeros((1, 4, 4, 1, 1)), PLAN.locations[:1])
    with pytest.raises(ValueError, match=r"4 windows but 1 were added"):
        aggregator.result()
