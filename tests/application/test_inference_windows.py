"""Inference windows sized to the machine (`[INFERENCE] spatial_window_size`, `memory_limit`).

The rule (`application/inference_windows.py`) is checked without a network; then two small
runs on phantom NIfTI files: a 3D one (the derived window writes outputs in the input's
geometry, one window per subject) and a 2D one with batch normalisation, where the border
covers the network's receptive field, so that the derived whole-plane windows, many
slices per call, give the training-window grid's outputs to float tolerance, and an
explicit window equal to the training window gives today's outputs bit for bit.
"""

import os

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from sfg_app import commands
from sfg_app.application.inference import SubjectInference
from sfg_app.application.inference_windows import (InferenceWindows, MAX_WINDOWS_PER_CALL,
                                                   inference_bytes_per_voxel)
from sfg_app.config import settings_from_dict
from sfg_app.data.samplers.grid import GridSampler
from sfg_app.demo.configs import TINY_SHAPE, phantom_sections, with_changes
from sfg_app.demo.phantoms import write_dataset
from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.engine.inference import InferenceDriver, InferenceOptions
from sfg_app.errors import ConfigError
from sfg_app.networks.stages import HIGHRES_STAGES

MiB = 2 ** 20


# -- the rule, without a network ---------------------------------------------------------------

def windows(budget_mib=1024, per_voxel=1000, training=(16, 16, 16), border=(2, 2, 2), **kw):
    return InferenceWindows(training, border, int(budget_mib * MiB), per_voxel, **kw)


def test_a_volume_that_fits_is_one_window_of_the_volume_and_its_border():
    choice = windows().choose((20, 18, 16))
    assert choice.window == (24, 22, 20) and choice.windows_per_call == 1
    plan = GridSampler(choice.window, (2, 2, 2)).plan((20, 18, 16))
    assert plan.locations.tolist() == [[-2, -2, -2, 22, 20, 18]]
    start, stop = plan.owned_box(plan.locations[0])
    assert start.tolist() == [0, 0, 0] and stop.tolist() == [20, 18, 16]


def test_the_axis_of_largest_extent_is_split_first_until_the_call_fits():
    rule = windows(budget_mib=1024, per_voxel=1000, training=(96, 96, 96), border=(8, 8, 8))
    choice = rule.choose((256, 256, 128))
    assert rule.cost(choice.window) <= 1024 * MiB
    assert choice.window == (102, 102, 96)  # x, y in 3 windows, z floored at training
    plan = GridSampler(choice.window, (8, 8, 8)).plan((256, 256, 128))
    assert len(plan.locations) == 3 * 3 * 2
    # The whole volume would not fit: more than one window along each split axis.
    assert rule.cost((256 + 16, 256 + 16, 128 + 16)) > 1024 * MiB


def test_the_window_never_goes_below_the_training_window():
    choice = windows(budget_mib=1, training=(16, 16, 16)).choose((64, 64, 64))
    assert choice.window == (16, 16, 16) and choice.windows_per_call == 1
    assert "training window" in choice.reason


def test_2d_windows_are_whole_planes_and_calls_take_as_many_slices_as_fit():
    rule = windows(budget_mib=64, per_voxel=1000, training=(24, 24, 1), border=(2, 2, 0))
    choice = rule.choose((100, 90, 40))
    assert choice.window == (104, 94, 1)
    assert choice.windows_per_call == (64 * MiB) // (104 * 94 * 1000) == 6
    assert windows(budget_mib=10 ** 4, training=(24, 24, 1), border=(2, 2, 0)).choose(
        (100, 90, 400)).windows_per_call == MAX_WINDOWS_PER_CALL
    assert windows(budget_mib=10 ** 4, training=(24, 24, 1), border=(2, 2, 0)).choose(
        (100, 90, 5)).windows_per_call == 5  # at most the subject's slices


def test_instance_normalisation_keeps_the_training_window_with_as_many_per_call_as_fit():
    rule = windows(budget_mib=64, per_voxel=1000, training=(24, 24, 1), border=(2, 2, 0),
                   largest=False)
    choice = rule.choose((100, 90, 40))
    assert choice.window == (24, 24, 1)
    assert choice.windows_per_call == MAX_WINDOWS_PER_CALL  # 5 x 5 x 40 windows, 64 fit
    assert "instance normalisation" in choice.reason
    assert windows(largest=False).choose((20, 18, 16)).window == (16, 16, 16)


def test_the_application_keeps_the_training_window_only_with_instance_normalisation(
        tmp_path):
    write_dataset(tmp_path / "data", subjects=3, seed=1, shape=TINY_SHAPE)
    for norm, largest in (("instance", False), ("batch", True), ("none", True)):
        settings = settings_from_dict(phantom_sections("run", {
            "NETWORK": {"norm_layer": norm}}), base_dir=tmp_path)
        rule = commands.make_application(settings).inference_windows()
        assert rule.largest is largest, norm


def test_an_explicit_window_is_used_as_it_is_with_the_training_batch():
    choice = windows(window=(32, 32, 16), batch_size=3).choose((200, 200, 200))
    assert choice.window == (32, 32, 16) and choice.windows_per_call == 3


def test_the_component_refuses_a_window_below_the_training_window():
    with pytest.raises(ConfigError, match=r"`window`.*at least the training window "
                                          r"\(16, 16, 16\).*Received"):
        windows(window=(32, 8, 16))


def test_the_estimate_covers_the_measured_peaks():
    """The peaks of `inference_windows`' docstring (bytes per window voxel, CPU)."""
    for scale, measured in ((0.5, 744), (1.0, 1462)):
        estimate = inference_bytes_per_voxel(HIGHRES_STAGES, scale, 3, output_channels=4)
        assert measured <= estimate <= 1.5 * measured


# -- the config -------------------------------------------------------------------------------

def settings_with(folder, **inference):
    sections = with_changes(phantom_sections("run"), {"INFERENCE": inference})
    return settings_from_dict(sections, base_dir=folder)


@pytest.mark.parametrize("window, expected", [
    ((16, 8, 16), r"at least the training window \(16, 16, 16\) on every axis"),
    ((32, 32, 1), r"at least the training window \(16, 16, 16\) on every axis"),
])
def test_a_window_below_the_training_window_is_a_config_error(tmp_path, window, expected):
    with pytest.raises(ConfigError, match=r"\[INFERENCE\] spatial_window_size\. Expected "
                                          + expected + r"\. Received spatial_window_size = "):
        settings_with(tmp_path, spatial_window_size=window)


def test_a_3d_window_for_a_2d_network_is_a_config_error(tmp_path):
    sections = with_changes(phantom_sections("run"), {
        "MR": {"spatial_window_size": (16, 16, 1)},
        "INFERENCE": {"border": (2, 2, 0), "spatial_window_size": (32, 32, 4)}})
    with pytest.raises(ConfigError, match=r"\[INFERENCE\] spatial_window_size\. Expected a "
                                          r"2D window \(x, y, 1\).*Received "
                                          r"spatial_window_size = \(32, 32, 4\)"):
        settings_from_dict(sections, base_dir=tmp_path)


def test_the_border_is_checked_against_the_inference_window(tmp_path):
    # A border of 10 is too large for the 16^3 training window, not for 32^3 windows.
    assert settings_with(tmp_path, border=(10, 10, 10),
                         spatial_window_size=(32, 32, 32)).inference.border == (10, 10, 10)
    with pytest.raises(ConfigError, match=r"\[INFERENCE\] border\. Expected each value less "
                                          r"than half the window \(16, 16, 16\)"):
        settings_with(tmp_path, border=(10, 10, 10))


def test_resize_sampling_takes_no_inference_window_and_limits_are_positive(tmp_path):
    sections = with_changes(phantom_sections("run"), {
        "NETWORK": {"window_sampling": "resize"},
        "INFERENCE": {"spatial_window_size": (32, 32, 32)}})
    with pytest.raises(ConfigError, match=r"spatial_window_size does not apply with "
                                          r"\[NETWORK\] window_sampling = resize"):
        settings_from_dict(sections, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"\[INFERENCE\] memory_limit"):
        settings_with(tmp_path, memory_limit=0)
    defaults = settings_with(tmp_path).inference
    assert defaults.spatial_window_size is None and defaults.memory_limit is None


# -- runs on phantoms -------------------------------------------------------------------------

def load(path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image


def untrained_run(folder, sections):
    """The run folder of `sections` with a checkpoint of the freshly built network: what
    is checked here holds for any weights, and a training step's trace would cost most
    of these tests' time (the trained network's windows: test_config_matrix.py)."""
    settings = settings_from_dict(sections, base_dir=folder)
    model = commands.make_application(settings).build_network()
    CheckpointStore(str(settings.system.model_dir), model=model).save(0)


def infer(folder, sections, output, **inference):
    settings = settings_from_dict(with_changes(sections, {"INFERENCE": inference}),
                                  base_dir=folder)
    return sorted(commands.infer(settings, output_dir=str(output)))


def test_3d_derived_windows_write_outputs_in_the_inputs_geometry(tmp_path, capfd):
    write_dataset(tmp_path / "data", subjects=3, seed=1, shape=TINY_SHAPE)
    sections = phantom_sections("run", {"NETWORK": {"norm_layer": "batch"}})
    untrained_run(tmp_path, sections)
    capfd.readouterr()
    written = infer(tmp_path, sections, tmp_path / "large")
    assert "1 window(s) of 24 x 22 x 20, 1 per network call (the whole volume" in \
        capfd.readouterr().err  # TINY_SHAPE plus the border (2, 2, 2) on each side
    assert len(written) == 2
    for path in written:
        subject = "_".join(os.path.basename(path).split("_")[:2])
        source_data, source = load(tmp_path / "data" / f"{subject}_mr.nii.gz")
        data, image = load(path)
        assert data.shape == source_data.shape
        np.testing.assert_array_equal(image.affine, source.affine)
        assert np.all(np.isfinite(data))


RECEPTIVE_RADIUS = 47  # HighRes3DNet's: 7 + 13 + 25 + 1 + 1 voxels on each side


@pytest.fixture(scope="module")
def slices_run(tmp_path_factory):
    """A 2D SFG-HighRes3DNet with batch normalisation (untrained) on (128, 128, 1)
    windows of phantoms of 136 x 128 x 3 voxels, its border (48, 48, 0) covering the
    receptive field; 7 windows per call at the training window (the last call of a
    subject holds fewer)."""
    folder = tmp_path_factory.mktemp("wide_slices")
    write_dataset(folder / "data", subjects=3, seed=1, shape=(136, 128, 3))
    border = RECEPTIVE_RADIUS + 1
    sections = phantom_sections("run", {
        "MR": {"spatial_window_size": (128, 128, 1)},
        "NETWORK": {"norm_layer": "batch", "batch_size": 7},
        "TASK organs": {"save_probabilities": True},
        "INFERENCE": {"border": (border, border, 0)}})
    untrained_run(folder, sections)
    return folder, sections


def volumes(paths):
    return {os.path.basename(path): load(path)[0] for path in paths}


def assert_close(first: dict, second: dict):
    assert list(first) == list(second)
    for name in first:
        a, b = first[name].astype(np.float64), second[name].astype(np.float64)
        scale = max(np.abs(b).max(), 1e-6)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def test_2d_large_windows_equal_the_training_window_grid_where_the_border_covers_the_field(
        slices_run, tmp_path, capfd):
    """With batch normalisation and a border covering the receptive field, every kept
    voxel sees the same input whatever the window, so crop blending gives the same
    outputs from the 4 x 4 windows of 128^2 per slice as from one whole plane of 232 x
    224 (the derived window, 3 slices per call): probabilities and synthesised CT to
    1e-4 of their range, and the same labels where the winning class leads by more."""
    folder, sections = slices_run
    capfd.readouterr()
    large = volumes(infer(folder, sections, tmp_path / "large"))
    assert "3 window(s) of 232 x 224 x 1, 3 per network call" in capfd.readouterr().err
    grid = volumes(infer(folder, sections, tmp_path / "grid",
                         spatial_window_size=(128, 128, 1)))
    assert all(np.ptp(v) > 0 for v in large.values())  # not trivially equal
    assert_close({n: v for n, v in large.items() if "organs.nii" not in n},
                 {n: v for n, v in grid.items() if "organs.nii" not in n})
    for name in large:
        if name.endswith("organs_prob.nii.gz"):
            probabilities = np.sort(large[name], axis=-1)
            clear = probabilities[..., -1] - probabilities[..., -2] > 1e-3
            labels = name.replace("_prob", "")
            np.testing.assert_array_equal(large[labels][clear], grid[labels][clear])


def test_2d_many_slices_per_call_equal_one_slice_per_call(slices_run, tmp_path):
    folder, sections = slices_run
    many = volumes(infer(folder, sections, tmp_path / "many"))
    one = volumes(infer(folder, with_changes(sections, {"NETWORK": {"batch_size": 1}}),
                        tmp_path / "one", spatial_window_size=(232, 224, 1)))
    assert_close(many, one)


def test_an_explicit_training_window_gives_the_training_window_grid_bit_for_bit(
        slices_run, tmp_path):
    """Today's inference, written out: the training window's grid, `[NETWORK]
    batch_size` windows per call, a plain traced call; against `[INFERENCE]
    spatial_window_size` = the training window through sfg_infer."""
    folder, sections = slices_run
    explicit = volumes(infer(folder, sections, tmp_path / "explicit",
                             spatial_window_size=(128, 128, 1)))
    settings = settings_from_dict(sections, base_dir=folder)
    application = commands.make_application(settings)
    model = InferenceDriver(application, InferenceOptions.from_settings(settings)).load_model()

    @tf.function(jit_compile=False)
    def predict(image):
        return application.decode_outputs(model(image, training=False))

    images, inference = application.data.roles.images, settings.inference
    written = []
    for files in application.inference_files():
        processed = application.data.preprocess(files, sections=images)
        subject = SubjectInference(
            processed, plan=GridSampler(application.data.window_size,
                                        inference.border).plan(processed.arrays),
            tasks=application.tasks, image_sections=images,
            output_dir=str(tmp_path / "before"), blending=inference.blending,
            with_variance=False, spatial_dims=application.spatial_dims,
            windows_per_call=settings.network.batch_size)
        for image, locations in subject.batches():
            subject.add(tf.nest.map_structure(np.asarray, predict(image)), None, locations)
        written.extend(subject.write())
    before = volumes(sorted(written))
    assert list(explicit) == list(before)
    for name in explicit:
        assert explicit[name].tobytes() == before[name].tobytes(), name
