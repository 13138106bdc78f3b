"""The whole application on small real NIfTI phantoms: train, kill, resume, infer, evaluate.

Each subject is written in its own orientation and voxel size (the phantom generator's
acquisitions), so preprocessing, grid inference and the writing back into each input's
geometry are all exercised.
"""

import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from sfg_app import commands
from sfg_app.config import load_settings
from sfg_app.demo.configs import ini_text, phantom_sections, with_changes
from sfg_app.demo.phantoms import write_dataset
from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.errors import TrainingError

SECTIONS = phantom_sections(body_mask=True, changes={
    "SYSTEM": {"seed": 5, "num_threads": 1},
    "MR": {"axcodes": ("R", "A", "S"), "pixdim": (18, 18, 14), "foreground_type": "otsu"},
    "NETWORK": {"window_sampling": "balanced"},
    "SFG": {"anneal_rate": 0.01, "tau_min": 0.1},
    "TRAINING": {"lr": 0.003, "max_iter": 6, "save_every_n": 2, "validation_every_n": 3,
                 "exclude_fraction_for_validation": 0.25,
                 "exclude_fraction_for_inference": 0.25, "random_flipping_axes": (0,)},
    "INFERENCE": {"blending": "gaussian"}})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    write_dataset(folder / "data", subjects=4, seed=3, shape=(28, 22, 18))
    (folder / "demo.ini").write_text(ini_text(SECTIONS))
    return folder


def test_train_kill_resume_infer_evaluate(project):
    config = str(project / "demo.ini")
    model_dir = project / "run"
    # A real kill: a training process is killed once its first checkpoint is on disk.
    process = subprocess.Popen(
        [sys.executable, "-m", "sfg_app.cli.train", "--config", config,
         "--set", "TRAINING.max_iter=1000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    deadline = time.time() + 240
    while time.time() < deadline and not CheckpointStore(str(model_dir)).iterations():
        if process.poll() is not None:
            pytest.fail(process.stdout.read().decode()[-3000:])
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = CheckpointStore(str(model_dir)).iterations()[-1]
    assert killed_at >= 2

    settings = load_settings(config, overrides=[f"TRAINING.max_iter={killed_at + 4}"])
    application = commands.make_application(settings)
    from sfg_app.engine.state import TrainingOptions
    from sfg_app.engine.training import TrainingDriver

    state = TrainingDriver(application, TrainingOptions.from_settings(settings)).run()
    assert state.first_iteration == killed_at
    assert state.iteration == killed_at + 4
    # tau follows the optimiser's step counter across the resume.
    expected_tau = max(0.1, 1.0 * np.exp(-0.01 * (killed_at + 3)))
    assert abs(float(state.model.temperature()) - expected_tau) < 1e-5
    assert os.path.exists(model_dir / "settings.yaml")
    assert (model_dir / "grouping_history.csv").exists()
    import tensorflow as tf

    tags = {value.tag for path in (model_dir / "logs" / "validation").glob("events.*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value}
    assert {"organs_loss", "synth_ct_mae", "image_0", "organs/target", "organs/prediction",
            "synth_ct/prediction"} <= tags

    written = commands.infer(settings)
    split = dict(line.strip().split(",") for line in open(model_dir / "dataset_split.csv")
                 if not line.startswith("subject"))
    inferred = [s for s, phase in split.items() if phase == "inference"]
    assert inferred
    for subject in inferred:
        source = nib.load(str(project / "data" / f"{subject}_mr.nii.gz"))
        for task in ("organs", "synth_ct"):
            path = model_dir / "inference" / f"{subject}_{task}.nii.gz"
            assert str(path) in written
            output = nib.load(str(path))
            assert output.shape[:3] == source.shape[:3]
            np.testing.assert_allclose(output.affine, source.affine, atol=1e-5)
        labels = np.asarray(nib.load(str(model_dir / "inference" /
                                         f"{subject}_organs.nii.gz")).dataobj)
        assert labels.min() >= 0 and labels.max() < 6

    rows = commands.evaluate(settings)
    assert {row["task"] for row in rows} == {"organs", "synth_ct"}
    assert (model_dir / "evaluation" / "metrics.csv").exists()
    assert all(np.isfinite(row["mae"]) for row in rows if row["task"] == "synth_ct")

    summary = commands.report_groups(settings)
    assert (model_dir / "grouping" / "grouping.png").stat().st_size > 1000
    assert all(abs(sum(entry["fraction"].values()) - 1) < 1e-6 for entry in summary.values())


def test_a_third_task_grows_a_group(project, tmp_path):
    (project / "three.ini").write_text(ini_text(with_changes(SECTIONS, {
        "SYSTEM": {"model_dir": "run_three"},
        "MULTITASK": {"tasks": "organs, synth_ct, body"},
        "TASK body": {"type": "segmentation", "target": "BODY", "num_classes": 2}})))
    settings = load_settings(str(project / "three.ini"),
                             overrides=["TRAINING.max_iter=2", "TRAINING.validation_every_n=0"])
    commands.train(settings)
    application = commands.make_application(settings)
    assert application.group_names() == ["organs", "synth_ct", "body", "shared"]
    written = commands.infer(settings, inputs=[str(project / "data" / "pelvis_000_mr.nii.gz")],
                             output_dir=str(tmp_path / "out"))
    assert sorted(os.path.basename(p) for p in written) == [
        "pelvis_000_body.nii.gz", "pelvis_000_organs.nii.gz", "pelvis_000_synth_ct.nii.gz"]
    summary = commands.report_groups(settings)
    assert all(len(entry["fraction"]) == 4 for entry in summary.values())


def test_a_diverging_run_stops_and_its_last_checkpoint_loads(project):
    (project / "nan.ini").write_text(ini_text(with_changes(
        SECTIONS, {"SYSTEM": {"model_dir": "run_nan"}})))
    config = str(project / "nan.ini")
    commands.train(load_settings(config, overrides=["TRAINING.max_iter=2",
                                                    "TRAINING.validation_every_n=0"]))
    diverging = load_settings(config, overrides=[
        "TRAINING.max_iter=200", "TRAINING.lr=1e30", "TRAINING.optimiser=sgd",
        "TRAINING.validation_every_n=0", "TRAINING.save_every_n=1000"])
    with pytest.raises(TrainingError, match=r"last checkpoint, of iteration 2.*lower \[TRAINING\] lr"):
        commands.train(diverging)
    from sfg_app.engine.inference import InferenceDriver, InferenceOptions

    driver = InferenceDriver(commands.make_application(diverging),
                             InferenceOptions.from_settings(diverging))
    model = driver.load_model()
    assert driver.iteration == 2
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
