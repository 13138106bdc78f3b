"""`sfg_export` on a tiny trained SFG network: files, equal outputs, errors."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from sfg_app import commands
from sfg_app.cli import export as cli_export
from sfg_app.config import save_settings, settings_from_dict
from sfg_app.demo.configs import TINY_SHAPE, phantom_sections
from sfg_app.demo.phantoms import write_dataset
from sfg_app.engine.inference import InferenceDriver, InferenceOptions
import sfg_app.networks.compact  # noqa: F401  registers CompactNetwork for load_model


def sections(model_dir: str, network: str = "sfg_highres3dnet") -> dict:
    # Uniform probabilities: the map architecture deals the kernels over the groups
    # (the default init puts most in the shared group, where nothing is dropped).
    return phantom_sections(model_dir, {"NETWORK": {"name": network},
                                        "SFG": {"init": "uniform"}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    write_dataset(folder / "data", subjects=3, seed=1, shape=TINY_SHAPE)
    settings = settings_from_dict(sections("run"), base_dir=folder)
    commands.train(settings)
    config = folder / "run" / "settings.yaml"
    return {"folder": folder, "settings": settings, "config": str(config)}


def test_export_writes_a_compact_network_with_the_map_output(trained, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_export.main(["--config", trained["config"], "--task", "synth_ct",
                            "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "multiply-adds" in printed and "compact (synth_ct)" in printed
    assert sorted(os.listdir(out)) == ["synth_ct.keras", "synth_ct_savedmodel"]

    model = InferenceDriver(commands.make_application(trained["settings"]),
                            InferenceOptions.from_settings(trained["settings"])).load_model()
    model.set_architecture("map")
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    full = ops.convert_to_numpy(model(x, training=False)["synth_ct"])

    compact = keras.saving.load_model(out / "synth_ct.keras")
    assert list(compact.head_specs) == ["synth_ct"]
    full_widths = [stage.filters for stage in model.stages]
    assert all(0 < w <= f for w, f in zip(compact.widths, full_widths))
    assert sum(compact.widths) < sum(full_widths)  # the organs specialists are dropped
    # Equal up to float32 summation order: the compact convolutions sum over fewer input
    # channels than the full ones (which add exact zeros), and 23 convolutions with
    # instance norms amplify that round-off (measured: 1.4e-5 at outputs of about 0.2).
    close = dict(atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(compact(x)["synth_ct"]), full, **close)
    saved = tf.saved_model.load(str(out / "synth_ct_savedmodel"))  # kept: owns the weights
    served = saved.serve(tf.constant(x))
    np.testing.assert_allclose(np.asarray(served["synth_ct"]), full, **close)

    # Exactly: the dropped kernels do not touch the task's map output at all.
    from sfg_app.networks.compact import kept_kernels

    rng = np.random.default_rng(1)
    for stage, kept in zip(model.stages, kept_kernels(model, "synth_ct")):
        for conv in [stage.block.conv] + [c for unit in stage.units for c in unit.convs]:
            kernel = ops.convert_to_numpy(conv.kernel).copy()
            kernel[..., ~kept] = 100 * rng.normal(size=kernel[..., ~kept].shape)
            conv.kernel.assign(kernel)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(model(x, training=False)["synth_ct"]), full)

    # An existing export is kept unless --overwrite.
    assert cli_export.main(["--config", trained["config"], "--task", "synth_ct",
                            "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_export.main(["--config", trained["config"], "--task", "synth_ct",
                            "--output", str(out), "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["synth_ct.keras", "synth_ct_savedmodel"]


def test_unknown_task_exits_2_naming_the_tasks(trained, capsys):
    assert cli_export.main(["--config", trained["config"], "--task", "nope"]) == 2
    error = capsys.readouterr().err
    assert "nope" in error and "organs" in error and "synth_ct" in error


def test_a_network_without_sfg_layers_is_a_config_error(trained, tmp_path, capsys):
    settings = settings_from_dict(sections(str(tmp_path / "dense"), "hard_shared"),
                                  base_dir=trained["folder"])
    config = tmp_path / "dense.yaml"
    save_settings(settings, str(config))
    commands.train(settings)  # the driver restores a checkpoint before looking
    assert cli_export.main(["--config", str(config), "--task", "organs"]) == 2
    assert "no SFG layers" in capsys.readouterr().err
