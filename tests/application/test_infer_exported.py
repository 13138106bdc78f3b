"""`sfg_infer --network`: a network exported by `sfg_export` gives the outputs of the
full network's `map` architecture for its task, and only its task's; and the errors of a
network that does not fit the config or the images."""

import os
import re

import keras
import nibabel as nib
import numpy as np
import pytest

from sfg_app import commands
from sfg_app.cli import export as cli_export
from sfg_app.cli import infer as cli_infer
from sfg_app.config import settings_from_dict
from sfg_app.demo.configs import phantom_sections
from sfg_app.demo.phantoms import write_dataset
from sfg_app.networks.compact import CompactNetwork
from sfg_app.networks.heads import HeadSpec

SUBJECT = "pelvis_000"


def sections(model_dir: str) -> dict:
    return phantom_sections(model_dir, {
        "SYSTEM": {"seed": 2},
        # 2D windows keep training and inference fast; every slice is a window's.
        "MR": {"spatial_window_size": (16, 16, 1)},
        "NETWORK": {"batch_size": 4},
        "TASK organs": {"save_probabilities": True},
        "TRAINING": {"max_iter": 2, "validation_every_n": 0,
                     "exclude_fraction_for_inference": None},
        "INFERENCE": {"border": (2, 2, 0), "blending": "gaussian"},
        # Uniform probabilities: the map architecture deals the kernels over the groups,
        # so the export drops the other task's specialists.
        "SFG": {"init": "uniform"}})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained network, both tasks exported, and the full network's map outputs."""
    folder = tmp_path_factory.mktemp("infer_exported")
    write_dataset(folder / "data", subjects=3, seed=1, shape=(20, 18, 12))
    commands.train(settings_from_dict(sections("run"), base_dir=folder))
    config = str(folder / "run" / "settings.yaml")
    export = folder / "export"
    for task in ("organs", "synth_ct"):
        assert cli_export.main(["--config", config, "--task", task,
                                "--output", str(export)]) == 0
    image = str(folder / "data" / f"{SUBJECT}_mr.nii.gz")
    full = folder / "full"
    assert cli_infer.main(["--config", config, "--input", image, "--output", str(full)]) == 0
    return {"config": config, "export": export, "image": image, "full": full}


def infer_exported(run, task: str, output, *extra) -> int:
    return cli_infer.main(["--config", run["config"], "--input", run["image"], "--output",
                           str(output), "--network", str(run["export"] / f"{task}.keras"),
                           *extra])


def voxels(folder, name: str) -> np.ndarray:
    return np.asarray(nib.load(str(folder / f"{SUBJECT}_{name}.nii.gz")).dataobj)


def test_an_exported_regression_network_writes_the_map_values_of_its_task(run, tmp_path,
                                                                          capsys):
    out = tmp_path / "out"
    # Another task's output in the folder is not this run's: it neither blocks nor changes.
    out.mkdir()
    (out / f"{SUBJECT}_organs.nii.gz").write_bytes(b"kept")
    assert infer_exported(run, "synth_ct", out) == 0
    assert "synth_ct.keras (task 'synth_ct')" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == [f"{SUBJECT}_organs.nii.gz", f"{SUBJECT}_synth_ct.nii.gz"]
    assert (out / f"{SUBJECT}_organs.nii.gz").read_bytes() == b"kept"
    # In the network's units (target_scale = 1000): float32 round-off of fewer summands.
    np.testing.assert_allclose(voxels(out, "synth_ct") / 1000,
                               voxels(run["full"], "synth_ct") / 1000, rtol=0, atol=1e-4)

    # The preflight covers the exported task's outputs: refused unless --overwrite.
    assert infer_exported(run, "synth_ct", out) == 2
    error = capsys.readouterr().err
    assert f"{SUBJECT}_synth_ct.nii.gz" in error and "--overwrite" in error
    assert infer_exported(run, "synth_ct", out, "--overwrite") == 0


def test_an_exported_segmentation_network_writes_the_map_labels_of_its_task(run, tmp_path):
    out = tmp_path / "out"
    assert infer_exported(run, "organs", out) == 0
    assert sorted(os.listdir(out)) == [f"{SUBJECT}_organs.nii.gz",
                                       f"{SUBJECT}_organs_prob.nii.gz"]
    np.testing.assert_allclose(voxels(out, "organs_prob"), voxels(run["full"], "organs_prob"),
                               rtol=0, atol=1e-4)
    np.testing.assert_array_equal(voxels(out, "organs"), voxels(run["full"], "organs"))


def save_variant(run, tmp_path, heads=None, input_shape=(None, None, None, 1)) -> str:
    """The exported synth_ct network rebuilt with other heads or another input, saved."""
    config = keras.saving.load_model(run["export"] / "synth_ct.keras").get_config()
    model = CompactNetwork.from_config(dict(config, heads=heads or config["heads"]))
    model.build(input_shape)
    path = str(tmp_path / "variant.keras")
    model.save(path)
    return path


@pytest.mark.parametrize("make, expected", [
    (lambda run, tmp: str(tmp / "missing.keras"), r"missing\.keras does not exist"),
    (lambda run, tmp: str(run["export"] / "synth_ct_savedmodel"),
     r"synth_ct_savedmodel is a folder: .* not its TensorFlow SavedModel"),
    (lambda run, tmp: save_variant(run, tmp, heads={"liver": HeadSpec("voxel", 1)}),
     r"variant\.keras is the network of task 'liver', which is not a task of this config "
     r"\(\[MULTITASK\] tasks = organs, synth_ct\)"),
    (lambda run, tmp: save_variant(run, tmp, heads={"organs": HeadSpec("voxel", 4)}),
     r"variant\.keras has a voxel head of 4 channel\(s\) for task 'organs', but "
     r"\[TASK organs\] of this config needs a voxel head of 6 channel\(s\)"),
    (lambda run, tmp: save_variant(run, tmp, input_shape=(None, None, None, 2)),
     r"The input .*pelvis_000_mr\.nii\.gz has 1 channel\(s\), but the exported network "
     r".*variant\.keras takes 2"),
    (lambda run, tmp: save_variant(run, tmp, input_shape=(None, None, None, None, 1)),
     r"variant\.keras is a 3D network, but the windows of \[MR\] .* are 2D"),
], ids=["missing", "savedmodel_folder", "task_not_in_config", "head", "channels", "rank"])
def test_a_network_that_does_not_fit_is_refused_before_any_output(run, tmp_path, capsys,
                                                                  make, expected):
    network = make(run, tmp_path)
    out = tmp_path / "out"
    assert cli_infer.main(["--config", run["config"], "--input", run["image"],
                           "--output", str(out), "--network", network]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sfg_infer: error: "), error
    assert re.search(expected, error), error
    assert not out.exists() or not os.listdir(out)


def test_sample_architecture_is_refused_with_an_exported_network(run, tmp_path, capsys):
    assert infer_exported(run, "synth_ct", tmp_path / "out",
                          "--set", "INFERENCE.architecture=sample") == 2
    error = capsys.readouterr().err
    assert "architecture = sample" in error and "INFERENCE.architecture=map" in error
