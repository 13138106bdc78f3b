"""Each rule of sfg_plan on small synthetic NIfTI files (tests/planning/conftest.py)."""

import subprocess
import sys

import numpy as np
import pytest

from sfg_app.cli import plan as cli_plan
from sfg_app.config import load_settings
from sfg_app.errors import ConfigError, DataError, SFGWarning
from sfg_app.networks.stages import HIGHRES_STAGES
from sfg_app.planning import rules
from sfg_app.planning.fingerprint import intensities, read_header
from sfg_app.planning.planner import plan_config
from planning_data import body, ct_volume, minimal_config, mr_volume, write_nifti

SEGMENTATION = {"MULTITASK": {"image": "IMG", "tasks": "seg"},
                "TASK seg": {"type": "segmentation", "target": "LAB"}}


def dataset(folder, images, labels, spacing=(1.0, 1.0, 1.0), affines=None):
    """Files sub<i>_img / sub<i>_lab and the minimal config that names them."""
    for index, (image, label) in enumerate(zip(images, labels)):
        affine = None if affines is None else affines[index]
        write_nifti(folder / "data" / f"sub{index}_img.nii.gz", image, spacing, affine)
        if label is not None:
            write_nifti(folder / "data" / f"sub{index}_lab.nii.gz", label, spacing, affine,
                        dtype=np.uint8)
    return minimal_config(folder, {
        "IMG": {"path_to_search": "data", "filename_contains": "_img"},
        "LAB": {"path_to_search": "data", "filename_contains": "_lab"}, **SEGMENTATION})


def labels_of(shape):
    labels = body(shape).astype(np.uint8)
    labels[body(shape, 0.05)] = 2
    return labels


def planned(tmp_path, config, *extra, memory_gb=1.0):
    output = tmp_path / "planned.ini"
    plan_config(config, output, memory_gb=memory_gb, progress=False, overwrite=True,
                overrides=extra)
    return load_settings(output), output.read_text()


# -- geometry -------------------------------------------------------------------------

def test_anisotropic_axial_data_give_2d_windows_and_the_10th_percentile(tmp_path):
    shape = (40, 36, 12)
    spacings = [(0.8, 0.8, 4.0), (0.8, 0.8, 5.0), (0.8, 0.8, 6.0)]
    for i, spacing in enumerate(spacings):
        write_nifti(tmp_path / "data" / f"s{i}_img.nii.gz", mr_volume(shape, i), spacing)
        write_nifti(tmp_path / "data" / f"s{i}_lab.nii.gz", labels_of(shape), spacing,
                    dtype=np.uint8)
    config = minimal_config(tmp_path, {
        "IMG": {"path_to_search": "data", "filename_contains": "_img"},
        "LAB": {"path_to_search": "data", "filename_contains": "_lab"}, **SEGMENTATION})
    settings, text = planned(tmp_path, config)
    image = settings.inputs["IMG"]
    expected_z = float(np.percentile([4.0, 5.0, 6.0], 10))
    assert image.pixdim == pytest.approx((0.8, 0.8, expected_z), abs=1e-3)
    assert image.spatial_window_size[2] == 1
    assert settings.inference.border[2] == 0
    assert "anisotropic" in text and "10th" in text


def test_a_coarse_axis_that_is_not_the_third_is_put_last(tmp_path):
    """Coronal slices (thick along A): axcodes put A last, 2D windows across it."""
    shape = (40, 10, 36)
    spacing = (0.9, 5.0, 0.9)
    headers = []
    for i in range(3):
        path = write_nifti(tmp_path / f"c{i}.nii.gz", mr_volume(shape, i), spacing)
        headers.append(read_header(str(path)))
    axcodes, _ = rules.choose_axcodes(headers)
    spacing_plan = rules.choose_spacing(headers, axcodes)
    assert spacing_plan.coarse_axis == 1
    axcodes, pixdim = rules.coarse_axis_last(axcodes, spacing_plan.pixdim, 1)
    assert axcodes == ("R", "S", "A") and pixdim[2] == pytest.approx(5.0)
    assert tuple(rules.resampled_shapes(headers, axcodes, pixdim)[0]) == (40, 36, 10)


def test_isotropic_data_keep_3d_windows_and_most_images_orientation(tmp_path):
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])   # LPS, as DICOM-derived files often are
    headers = [read_header(str(write_nifti(tmp_path / f"i{i}.nii.gz", np.zeros((8, 9, 10)),
                                           affine=flip @ np.diag([1.0, 1.2, 1.1, 1.0]))))
               for i in range(3)]
    headers.append(read_header(str(write_nifti(tmp_path / "ras.nii.gz", np.zeros((8, 9, 10))))))
    axcodes, reason = rules.choose_axcodes(headers)
    assert axcodes == ("L", "P", "S") and "3 of 4" in reason
    spacing = rules.choose_spacing(headers, axcodes)
    assert spacing.coarse_axis is None
    assert spacing.pixdim == pytest.approx((1.0, 1.2, 1.1))


# -- intensities ------------------------------------------------------------------------

def test_a_ct_is_recognised_and_clipped_then_z_scored():
    stats = intensities([ct_volume((30, 30, 20))])
    keys = rules.normalisation_keys("CT", stats)
    assert keys["percentile_clip"].value == (0.5, 99.5)
    assert keys["foreground_type"].value == "threshold"
    assert keys["foreground_threshold"].value == -500
    assert keys["normalisation"].value == "zscore"


def test_a_ct_padded_with_minus_3024_is_still_a_ct():
    ct = ct_volume((30, 30, 20)).astype(np.int16)
    ct[:3] = -3024
    assert "percentile_clip" in rules.normalisation_keys("CT", intensities([ct]))


@pytest.mark.parametrize("volume", [
    mr_volume((30, 30, 20)),
    # A z-scored MR: negative, but not Hounsfield units.
    (mr_volume((30, 30, 20)).astype(np.float32) - 300) / 250,
    # Float CT values (resampled by another tool) are not taken for a CT: no integers.
    ct_volume((30, 30, 20)).astype(np.float32) + 0.25,
])
def test_mr_and_other_images_are_z_scored_in_the_otsu_foreground(volume):
    keys = rules.normalisation_keys("IMG", intensities([volume]))
    assert keys["foreground_type"].value == "otsu"
    assert "percentile_clip" not in keys


# -- tasks ----------------------------------------------------------------------------

def test_non_contiguous_labels_are_refused_naming_the_file_and_the_values(tmp_path):
    shape = (16, 16, 16)
    gappy = labels_of(shape)
    gappy[gappy == 2] = 4
    config = dataset(tmp_path, [mr_volume(shape, i) for i in range(2)],
                     [labels_of(shape), gappy])
    with pytest.raises(DataError) as error:
        planned(tmp_path, config)
    message = str(error.value)
    assert "[0, 1, 2, 4]" in message and "missing 3" in message
    assert "sub1_lab.nii.gz" in message and "relabel" in message
    assert not (tmp_path / "planned.ini").exists()


def test_classes_sampler_and_regression_scale(tmp_path):
    shape = (24, 24, 16)
    for i in range(3):
        write_nifti(tmp_path / "data" / f"sub{i}_img.nii.gz", mr_volume(shape, i))
        write_nifti(tmp_path / "data" / f"sub{i}_lab.nii.gz", labels_of(shape), dtype=np.uint8)
        write_nifti(tmp_path / "data" / f"sub{i}_ct.nii.gz", ct_volume(shape, i))
    config = minimal_config(tmp_path, {
        "IMG": {"path_to_search": "data", "filename_contains": "_img"},
        "LAB": {"path_to_search": "data", "filename_contains": "_lab"},
        "CT": {"path_to_search": "data", "filename_contains": "_ct"},
        "MULTITASK": {"image": "IMG", "tasks": "seg, synth"},
        "TASK seg": {"type": "segmentation", "target": "LAB"},
        "TASK synth": {"type": "regression", "target": "CT", "mask": "LAB"}})
    settings, text = planned(tmp_path, config)
    assert settings.tasks["seg"].num_classes == 3
    assert settings.network.window_sampling == "balanced"   # class 2 is rare
    synth = settings.tasks["synth"]
    assert synth.mask == "LAB"
    # Inside the body (40 HU soft tissue, 900 HU bone): centre and half of the 1-99 range.
    assert 100 < synth.target_shift < 600 and 200 < synth.target_scale < 600
    assert settings.network.name == "sfg_highres3dnet"
    assert settings.multitask.weighting == "uncertainty"
    assert settings.training.exclude_fraction_for_validation == pytest.approx(1 / 3)
    for line in ("num_classes = 3", "window_sampling = balanced"):
        before = text.split(line)[0].rstrip().splitlines()[-1]
        assert before.startswith(";"), f"no reason above {line!r}"


def test_regression_scaling_centres_the_1_to_99_range():
    values = rules.Values({1: -100.0, 50: 0.0, 99: 1900.0}, -1000, 3000, 10, True)
    shift, scale = rules.regression_scaling(values)
    assert (shift.value, scale.value) == (900, 1000)


# -- memory, window, border -------------------------------------------------------------

def test_memory_decides_the_window_and_batch():
    per_voxel = rules.activation_bytes(HIGHRES_STAGES, 1.0)
    assert per_voxel == 4 * rules.TENSORS_PER_CHANNEL * 912   # 7x16 + 7x32 + 7x64 + 64 + 64
    smallest, pixdim = (160, 160, 120), (1.0, 1.0, 1.0)
    large = rules.choose_window(smallest, pixdim, False, 40 * 2 ** 30, per_voxel)
    small = rules.choose_window(smallest, pixdim, False, 2 * 2 ** 30, per_voxel)
    assert large.window == (128, 128, 120) or np.prod(large.window) > np.prod(small.window)
    assert np.prod(small.window) * per_voxel * small.batch <= 2 * 2 ** 30
    assert all(w % 8 == 0 for w in small.window) and small.batch == 2
    # Never larger than the data, even with memory to spare.
    tiny_data = rules.choose_window((20, 30, 12), pixdim, False, 40 * 2 ** 30, per_voxel)
    assert tiny_data.window == (16, 24, 8)
    # 2D: windows (x, y, 1) and the largest batch that fits, at most 64.
    flat = rules.choose_window((200, 200, 30), pixdim, True, 2 ** 30, per_voxel)
    assert flat.window[2] == 1 and 2 <= flat.batch <= 64
    assert np.prod(flat.window) * per_voxel * flat.batch <= 2 ** 30


def test_the_memory_given_on_the_command_line_shrinks_the_window(tmp_path, monkeypatch):
    monkeypatch.setattr(rules, "cpu_cores", lambda: 1000)  # arithmetic to spare
    shape = (48, 48, 40)
    config = dataset(tmp_path, [mr_volume(shape, i) for i in range(2)],
                     [labels_of(shape)] * 2)
    roomy, _ = planned(tmp_path, config, memory_gb=64)
    tight, text = planned(tmp_path, config, memory_gb=0.5)
    assert roomy.inputs["IMG"].spatial_window_size == (48, 48, 40)
    assert np.prod(tight.inputs["IMG"].spatial_window_size) < 48 * 48 * 40
    assert "--memory-gb 0.5" in text


def test_a_training_step_counts_every_convolution_three_times():
    # 27 taps x (16 x (1 + 6 x 16) + 32 x (16 + 6 x 32) + 64 x (32 + 6 x 64) + 2 x 64 x 64)
    macs = 27 * (16 * 97 + 32 * 208 + 64 * 416 + 2 * 64 * 64)
    assert rules.training_flops(HIGHRES_STAGES, 1.0, False) == 6 * macs
    assert rules.training_flops(HIGHRES_STAGES, 1.0, True) == 2 * macs   # 9 taps in 2D
    assert rules.training_flops(HIGHRES_STAGES, 0.5, False) < 6 * macs / 3.5
    flops, reason = rules.compute_budget("cpu", 4)
    assert flops == rules.CPU_STEP_SECONDS * rules.CPU_FLOPS_PER_CORE * 4 and "4 core" in reason
    assert rules.compute_budget("gpu", 4)[0] == float("inf")


def test_on_a_cpu_the_arithmetic_caps_the_step(tmp_path, monkeypatch):
    shape = (64, 64, 48)
    config = dataset(tmp_path, [mr_volume(shape, i) for i in range(2)],
                     [labels_of(shape)] * 2)
    monkeypatch.setattr(rules, "cpu_cores", lambda: 1)
    one_core, text = planned(tmp_path, config, memory_gb=64)
    window = one_core.inputs["IMG"].spatial_window_size
    step = 2 * np.prod(window) * rules.training_flops(HIGHRES_STAGES, 0.5, False)
    assert step <= rules.CPU_STEP_SECONDS * rules.CPU_FLOPS_PER_CORE
    assert one_core.network.layer_scale == 0.5 and "on this machine's 1 core(s)" in text
    # A width the minimal config gives is kept and planned around.
    full, _ = planned(tmp_path, config, "NETWORK.layer_scale=1", memory_gb=64)
    assert full.network.layer_scale == 1.0
    assert np.prod(full.inputs["IMG"].spatial_window_size) < np.prod(window)
    monkeypatch.setattr(rules, "cpu_cores", lambda: 64)
    many_cores, _ = planned(tmp_path, config, memory_gb=64)
    assert np.prod(many_cores.inputs["IMG"].spatial_window_size) > np.prod(window)
    # A GPU plans no width and no arithmetic cap.
    output = tmp_path / "gpu.ini"
    plan_config(config, output, device="gpu:80", progress=False)
    gpu = load_settings(output)
    assert gpu.inputs["IMG"].spatial_window_size == (64, 64, 48)
    assert "layer_scale" not in output.read_text()


def test_the_border_comes_from_the_receptive_field_and_stays_below_half_the_window():
    radius = rules.receptive_radius(HIGHRES_STAGES)
    assert radius == 47   # 1 + 6 + 1 + 12 + 1 + 24 + 1 + 1
    for window in [(8, 8, 8), (96, 96, 1), (128, 128, 128), (16, 24, 1)]:
        border = rules.choose_border(window, radius).value
        assert all(2 * b < w for b, w in zip(border, window))
        assert border[2] == 0 or window[2] > 1


def test_devices():
    assert rules.parse_device("gpu:24") == ("gpu", 24.0)
    assert rules.parse_device("cpu") == ("cpu", None)
    with pytest.raises(ConfigError, match="gpu:NN"):
        rules.parse_device("gpu")
    budget, reason = rules.memory_budget("gpu", 24.0, None, 0)
    assert budget == int(0.85 * 24 * 2 ** 30) and "GPU of 24 GB" in reason


# -- warnings and errors -----------------------------------------------------------------

def test_a_single_subject_missing_targets_and_other_grids_are_warned_about(tmp_path):
    shape = (16, 16, 16)
    images = [mr_volume(shape, i) for i in range(3)]
    config = dataset(tmp_path, images, [labels_of(shape), labels_of(shape), None])
    # Subject 1's label lies on another grid (shifted by 5 mm).
    shifted = np.diag([1.0, 1.0, 1.0, 1.0])
    shifted[0, 3] = 5
    write_nifti(tmp_path / "data" / "sub1_lab.nii.gz", labels_of(shape), affine=shifted,
                dtype=np.uint8)
    with pytest.warns(SFGWarning) as caught:
        settings, text = planned(tmp_path, config)
    messages = " ".join(str(w.message) for w in caught)
    assert "1 of 3 subjects lack the target [LAB] (sub2)" in messages
    assert "not on their subject's [IMG] grid" in messages and "sub1" in messages
    assert settings.tasks["seg"].optional_target is True

    single = tmp_path / "single"
    config = dataset(single, [images[0]], [labels_of(shape)])
    with pytest.warns(SFGWarning, match="One subject"):
        settings, _ = planned(single, config)
    assert settings.inference.dataset_to_infer == "training"


def test_the_minimal_configs_mistakes_name_the_file_and_key(tmp_path, capsys):
    config = minimal_config(tmp_path, {
        "IMG": {"path_to_search": "data", "filename_contans": "_img"},
        "MULTITASK": {"image": "IMG", "tasks": "seg"},
        "TASK seg": {"type": "segmentation", "target": "LAB"}})
    assert cli_plan.main(["--config", str(config), "--output", str(tmp_path / "p.ini")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sfg_plan: error: ")
    assert "minimal.ini, line 3" in err and "filename_contains" in err
    config.write_text(config.read_text().replace("filename_contans", "filename_contains"))
    assert cli_plan.main(["--config", str(config), "--output", str(tmp_path / "p.ini")]) == 2
    err = capsys.readouterr().err
    assert "[TASK seg] target = 'LAB': there is no input section [LAB]" in err


def test_the_user_keys_are_kept_and_an_existing_output_is_refused(tmp_path):
    shape = (16, 16, 16)
    config = dataset(tmp_path, [mr_volume(shape, i) for i in range(2)], [labels_of(shape)] * 2)
    settings, text = planned(tmp_path, config, "IMG.pixdim=(2, 2, 2)", "NETWORK.layer_scale=0.5")
    assert settings.inputs["IMG"].pixdim == (2, 2, 2)
    assert settings.network.layer_scale == 0.5
    assert "; as in minimal.ini\npixdim = (2, 2, 2)" in text
    with pytest.raises(Exception, match="exists already"):
        plan_config(config, tmp_path / "planned.ini", progress=False)


def test_help_does_not_import_tensorflow():
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from sfg_app.cli import plan; "
         "code = plan.main(['--help']); print('TF', 'tensorflow' in sys.modules, "
         "'keras' in sys.modules, code)"], capture_output=True, text=True, timeout=120)
    assert "--output PATH" in done.stdout and "--device cpu|gpu:NN" in done.stdout
    assert "TF False False 0" in done.stdout
