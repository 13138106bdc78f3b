"""The configurations a user can write, each as a small real run on phantom subjects.

Each run trains for one to three iterations on real NIfTI files (or SimpleITK files, or 2D
slices written here), infers whole volumes and checks what was written: shapes and
geometry of the inputs, finite values, the files of each option. Tracing the training step
costs most of a run's time, so runs that only differ at inference share one training.
"""

import csv
import os
import threading

import keras
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from sfg_app import commands
from sfg_app.cli import evaluate as cli_evaluate
from sfg_app.cli import infer as cli_infer
from sfg_app.cli import train as cli_train
from sfg_app.config import settings_from_dict
from sfg_app.demo.configs import TINY_SHAPE, phantom_sections, with_changes
from sfg_app.demo.phantoms import write_dataset
from sfg_app.engine.handlers import Handler, current_learning_rate
from sfg_app.engine.inference import InferenceDriver, InferenceOptions
from sfg_app.engine.state import TrainingOptions
from sfg_app.engine.training import TrainingDriver
from sfg_app.errors import TrainingError

INFERRED = "pelvis_000"  # the inference subject of the split (seed 1, 3 subjects)


def configure(folder, sections: dict, **changes):
    """Settings of `sections` with `changes` ({section: {key: value}}; None drops a section)."""
    return settings_from_dict(with_changes(sections, changes), base_dir=folder)


def one_task(**changes) -> dict:
    """Changes giving a network with the organs task only."""
    return dict({"MULTITASK": {"tasks": "organs"}, "TASK synth_ct": None}, **changes)


def load(path):
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image


def load_model(settings):
    return InferenceDriver(commands.make_application(settings),
                           InferenceOptions.from_settings(settings)).load_model()


def window_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sfg-windows")]


def snapshot(project) -> dict:
    """{path: (size, mtime)} of the data files and of the files beside them (where the
    config is); the other tests' runs add only folders."""
    paths = [p for p in project.iterdir() if p.is_file()] + list((project / "data").iterdir())
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


class Recorder(Handler):
    """Keeps the learning rate at the start and the logs of every step of a run."""

    def __init__(self):
        self.logs = []
        self.start_lr = None

    def on_start(self, state):
        self.start_lr = current_learning_rate(state.optimiser)

    def on_step_end(self, state):
        self.logs.append(dict(state.logs))


class Interrupt(Handler):
    """Ctrl-C after the first step."""

    def on_step_end(self, state):
        raise KeyboardInterrupt


def run(settings, *handlers):
    return TrainingDriver(commands.make_application(settings),
                          TrainingOptions.from_settings(settings), extra_handlers=handlers).run()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    write_dataset(folder / "data", subjects=3, seed=1, shape=TINY_SHAPE)
    return folder


@pytest.fixture(scope="module")
def sfg_run(project, tmp_path_factory):
    """One trained SFG-HighRes3DNet, shared by the tests that only change inference.

    It trains from an empty working directory, with the files outside its model_dir
    recorded before, for `test_a_run_writes_only_inside_model_dir`.
    """
    model_dir = str(project / "run_sfg")
    cwd = tmp_path_factory.mktemp("cwd")
    before = snapshot(project)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        commands.train(configure(project, phantom_sections("run_sfg"),
                                 TRAINING={"max_iter": 2}))
    return {"sections": phantom_sections("run_sfg"), "model_dir": model_dir, "cwd": cwd,
            "before": before}


# -- inference architectures, blending, probabilities ------------------------------------

def test_sample_architecture_writes_variance_maps(project, sfg_run, tmp_path):
    source_data, source = load(project / "data" / f"{INFERRED}_mr.nii.gz")
    outputs = {}
    for mode in ("sample", "expected", "map", "map_again"):
        settings = configure(project, sfg_run["sections"], INFERENCE={
            "architecture": mode.removesuffix("_again"), "mc_samples": 3,
            "save_seg_dir": str(tmp_path / mode)})
        written = commands.infer(settings)
        outputs[mode] = {os.path.basename(p): load(p)[0] for p in written}
    assert sorted(outputs["sample"]) == sorted(
        f"{INFERRED}_{name}.nii.gz" for name in
        ("organs", "organs_var", "synth_ct", "synth_ct_var"))
    for task in ("organs", "synth_ct"):
        variance, image = load(tmp_path / "sample" / f"{INFERRED}_{task}_var.nii.gz")
        assert variance.shape == source_data.shape
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
        assert np.all(np.isfinite(variance)) and variance.min() >= 0
        assert variance.max() > 0  # the sampled architectures differ
    assert sorted(outputs["expected"]) == [f"{INFERRED}_organs.nii.gz",
                                           f"{INFERRED}_synth_ct.nii.gz"]
    assert all(np.all(np.isfinite(a)) for a in outputs["expected"].values())
    for name, array in outputs["map"].items():
        np.testing.assert_array_equal(array, outputs["map_again"][name])


def test_inference_loads_the_trained_network(project, sfg_run):
    model = load_model(configure(project, sfg_run["sections"]))
    for probabilities in model.grouping_probabilities().values():  # learned, from 1/3
        assert np.abs(probabilities - 1 / 3).max() > 1e-5


def test_blending_modes_and_probabilities(project, sfg_run, tmp_path):
    source_data, source = load(project / "data" / f"{INFERRED}_mr.nii.gz")
    values = {}
    for blending in ("crop", "constant", "gaussian"):
        settings = configure(project, sfg_run["sections"],
                             INFERENCE={"blending": blending, "border": (3, 3, 2),
                                        "save_seg_dir": str(tmp_path / blending),
                                        # the training window: several, overlapping
                                        "spatial_window_size": (16, 16, 16)},
                             **{"TASK organs": {"save_probabilities": True}})
        commands.infer(settings)
        folder = tmp_path / blending
        probabilities, image = load(folder / f"{INFERRED}_organs_prob.nii.gz")
        labels, _ = load(folder / f"{INFERRED}_organs.nii.gz")
        assert probabilities.shape == source_data.shape + (6,)
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
        assert probabilities.min() >= 0
        np.testing.assert_array_equal(labels, probabilities.argmax(axis=-1))
        values[blending], _ = load(folder / f"{INFERRED}_synth_ct.nii.gz")
        assert np.all(np.isfinite(values[blending]))
    # Windows overlap (steps of 16 - 2 * border): the three blendings differ there.
    assert not np.allclose(values["constant"], values["gaussian"])
    assert not np.allclose(values["crop"], values["constant"])


def test_a_run_writes_only_inside_model_dir(project, sfg_run):
    settings = configure(project, sfg_run["sections"])
    commands.infer(settings)
    commands.evaluate(settings)
    assert snapshot(project) == sfg_run["before"]
    assert os.listdir(sfg_run["cwd"]) == []
    assert {"checkpoints", "inference", "evaluation", "dataset_split.csv",
            "settings.yaml"} <= set(os.listdir(sfg_run["model_dir"]))


# -- SimpleITK files through sfg_infer ---------------------------------------------------

def test_simpleitk_input_gives_outputs_in_its_geometry(project, sfg_run, tmp_path, capsys):
    config = os.path.join(sfg_run["model_dir"], "settings.yaml")
    source = sitk.ReadImage(str(project / "data" / "pelvis_001_mr.nii.gz"))
    scan = tmp_path / "scan_mr.mha"
    sitk.WriteImage(source, str(scan))
    out = tmp_path / "out"
    assert cli_infer.main(["--config", str(config), "--input", str(scan),
                           "--output", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["scan_organs.mha", "scan_synth_ct.mha"]
    for name in os.listdir(out):
        output = sitk.ReadImage(str(out / name))
        assert output.GetSize() == source.GetSize()
        np.testing.assert_allclose(output.GetOrigin(), source.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(output.GetSpacing(), source.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(output.GetDirection(), source.GetDirection(), atol=1e-6)
    assert sitk.ReadImage(str(out / "scan_organs.mha")).GetPixelID() == sitk.sitkUInt8

    # An input whose name is an output path: `_organs` is removed from ids, so the
    # output of subject `scan` would be the input itself. It is refused, never written.
    victim = out / "scan_organs.mha"
    sitk.WriteImage(source, str(victim))
    content = victim.read_bytes()
    capsys.readouterr()
    assert cli_infer.main(["--config", str(config), "--input", str(victim), "--output",
                           str(out), "--set", "MR.filename_removefromid=_(mr|organs)$"]) == 2
    assert "would overwrite an input image" in capsys.readouterr().err
    assert victim.read_bytes() == content


# -- networks and [SFG] / [MULTITASK] options -------------------------------------------

def test_hard_shared_resumes_with_the_configured_lr_and_schedule(project):
    sections = phantom_sections("run_hard")
    sections["NETWORK"]["name"] = "hard_shared"
    run(configure(project, sections, TRAINING={"lr": 1e-3}))
    # Another lr, and a schedule with warm-up where the checkpoint had a constant rate.
    resumed = Recorder()
    state = run(configure(project, sections, TRAINING={
        "lr": 0.02, "max_iter": 2, "lr_schedule": "cosine", "warmup_iter": 10}), resumed)
    assert state.iteration == 2
    cosine, warmup = 0.5 * (1 + np.cos(np.pi * 1 / 2)), 2 / 10
    assert resumed.start_lr == pytest.approx(0.02 * cosine * warmup, rel=1e-5)
    # Another optimiser cannot take the saved one's state: a user error naming it.
    with pytest.raises(TrainingError, match=r"ckpt-2 does not fit.*\[TRAINING\] optimiser"):
        run(configure(project, sections, TRAINING={"max_iter": 3, "optimiser": "momentum"}))


@pytest.mark.parametrize("changes", [
    {"NETWORK": {"name": "cross_stitch"}},
    {"SFG": {"allocation": "learned", "impl": "reference", "sample_per": "example",
             "learn_probabilities": False, "init": "uniform", "connectivity": "separate"},
     "NETWORK": {"norm_layer": "batch"}},
], ids=["cross_stitch", "reference_example_fixed_separate_batchnorm"])
def test_network_trains_and_infers(project, changes, tmp_path):
    name = "_".join(str(v) for keys in changes.values() for v in keys.values())
    sections = phantom_sections(f"run_{name}")
    run(configure(project, sections, **changes))
    architecture = "sample" if "SFG" in changes else "map"  # per-example masks at inference
    settings = configure(project, sections, INFERENCE={
        "architecture": architecture, "mc_samples": 2, "save_seg_dir": str(tmp_path)},
        **changes)
    written = commands.infer(settings)
    shape = load(project / "data" / f"{INFERRED}_mr.nii.gz")[0].shape
    assert all(load(path)[0].shape == shape for path in written)
    if "SFG" in changes:
        model = load_model(settings)
        for probabilities in model.grouping_probabilities().values():  # fixed at 1/3
            np.testing.assert_allclose(probabilities, 1 / 3, atol=1e-7)
        # The moving statistics of batch norm (not trainable) are restored too.
        moving = [w for w in model.weights if w.path.endswith("moving_mean")]
        assert moving and all(np.any(np.asarray(w) != 0) for w in moving)


@pytest.mark.parametrize("finetune, max_iter, fixed_from", [
    (100, 300, 200), (0, 300, None), (500, 300, 0)])
def test_finetune_iter_fixes_the_architecture_of_the_last_iterations(project, finetune,
                                                                     max_iter, fixed_from):
    settings = configure(project, phantom_sections("run_finetune"),
                         SFG={"allocation": "learned", "finetune_iter": finetune},
                         TRAINING={"max_iter": max_iter})
    model = commands.make_application(settings).build_network()
    assert model.grouping.fixed_from == fixed_from


def test_uncertainty_weighting_with_dense_groups_and_decay_resumes(project):
    sections = phantom_sections("run_uncertainty")
    # logit_gradient = balanced: the driver's per-task gradients through the same run.
    changes = {"MULTITASK": {"weighting": "uncertainty"},
               "SFG": {"connectivity": "dense", "logit_gradient": "balanced"},
               "NETWORK": {"decay": 1e-4}}
    first = run(configure(project, sections, **changes))
    trained = first.objective.get_weights()[0]
    assert trained.shape == (2,) and np.all(trained != 0)  # log-variances learned
    path = tf.train.latest_checkpoint(os.path.join(project, "run_uncertainty", "checkpoints"))
    saved = [tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
             if name.startswith("objective/") and "log_variances" in name]
    assert len(saved) == 1
    np.testing.assert_array_equal(saved[0], trained)
    assert np.isfinite(first.logs["loss"])
    # A resume with nothing left to do restores the checkpoint and stops there.
    resumed = run(configure(project, sections, **changes))
    assert resumed.first_iteration == 1
    np.testing.assert_array_equal(resumed.objective.get_weights()[0], trained)


@pytest.mark.parametrize("precision, changes", [
    ("bfloat16", {}),
    # An l2 loss of CT / 30: its gradients overflow float16 at the initial loss scale of
    # 2^15, so the first steps are skipped and the scale lowered (twice, measured).
    # (8^3 windows: float16 convolutions are slow on CPU.)
    ("float16", {"NETWORK": {"name": "hard_shared"}, "MR": {"spatial_window_size": (8, 8, 8)},
                 "TASK synth_ct": {"target_scale": 30, "loss": "l2"}}),
])
def test_mixed_precision_trains_with_float32_logits(project, precision, changes):
    state = run(configure(project, phantom_sections(f"run_{precision}"),
                          SYSTEM={"mixed_precision": precision}, **changes))
    assert state.iteration == 1
    logs = state.logs  # the objective adds the task losses in float32, not rounded
    assert logs["loss"] == pytest.approx(
        logs["organs_loss"] + logs["synth_ct_loss"] + 1e-3 * logs["kl"], rel=1e-6)
    if precision == "float16":
        assert state.optimiser.dynamic_scale.numpy() < 2 ** 15
    assert all(np.isfinite(v) for v in state.logs.values())
    assert state.model.dtype_policy.name == f"mixed_{precision}"
    outputs = state.model(np.zeros((1, 8, 8, 8, 1), np.float32), training=False)
    assert {str(t.dtype) for t in outputs.values()} == {"<dtype: 'float32'>"}
    assert keras.config.dtype_policy().name == "float32"  # the policy does not leak


# -- data options ----------------------------------------------------------------------

def test_optional_target_missing_for_some_subjects(project):
    (project / "ct_some").mkdir()
    os.link(project / "data" / "pelvis_001_ct.nii.gz",
            project / "ct_some" / "pelvis_001_ct.nii.gz")
    sections = phantom_sections("run_optional")
    settings = configure(project, sections, CT={"path_to_search": "ct_some"},
                         TRAINING={"max_iter": 3}, **{"TASK synth_ct": {"optional_target": True}})
    steps = Recorder()
    run(settings, steps)
    # pelvis_002 (training) has no CT: its windows add nothing to the synth_ct loss.
    ct_losses = [logs["synth_ct_loss"] for logs in steps.logs]
    assert 0.0 in ct_losses and any(loss > 0 for loss in ct_losses)
    assert all(logs["organs_loss"] > 0 for logs in steps.logs)
    commands.infer(settings)
    rows = commands.evaluate(settings)
    # The inference subject lacks the CT too: only its segmentation is evaluated.
    assert [(row["subject"], row["task"]) for row in rows] == [(INFERRED, "organs")]


def test_disk_cache_with_two_threads_is_reused_and_threads_end(project):
    sections = phantom_sections("run_cache")
    changes = one_task(SYSTEM={"num_threads": 2},
                       NETWORK={"name": "highres3dnet", "cache": "disk"})
    run(configure(project, sections, **changes))
    assert window_threads() == []
    cache = project / "run_cache" / "cache" / "training"
    files = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert len(files) == 2 * 2  # two training subjects, MR and LABEL each
    # Interrupted after one more step: the workers stop all the same.
    with pytest.raises(KeyboardInterrupt):
        run(configure(project, sections, TRAINING={"max_iter": 5}, **changes), Interrupt())
    assert window_threads() == []
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == files
    written = commands.infer(configure(project, sections, **changes))
    assert [os.path.basename(p) for p in written] == [f"{INFERRED}_organs.nii.gz"]


# -- command-line exit codes -------------------------------------------------------------

def test_cli_user_errors_exit_with_status_2(project, sfg_run, tmp_path, capsys):
    text = (project / "run_sfg" / "settings.yaml").read_text()
    config = tmp_path / "misspelt.yaml"
    config.write_text(text.replace("max_iter:", "max_itre:"))
    assert cli_train.main(["--config", str(config)]) == 2
    assert "max_iter" in capsys.readouterr().err

    fresh = tmp_path / "never_trained"
    config = tmp_path / "fresh.yaml"
    config.write_text(text.replace(sfg_run["model_dir"], str(fresh)))
    assert cli_infer.main(["--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert str(fresh / "checkpoints") in error and "Train first" in error
    assert not fresh.exists()  # nothing written for a run that does not exist

    assert cli_evaluate.main(["--config", str(project / "run_sfg" / "settings.yaml"),
                              "--set", f"INFERENCE.save_seg_dir={tmp_path / 'none'}"]) == 2
    error = capsys.readouterr().err
    assert f"No output of task 'organs' for subject '{INFERRED}'" in error
    assert str(tmp_path / "none") in error


# -- 2D images and image-level tasks -------------------------------------------------------

@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """2D NIfTI slices of phantoms, (X, Y) files for even subjects and (X, Y, 1) for odd
    ones, and a CSV of a class and an age per subject."""
    folder = tmp_path_factory.mktemp("slices")
    rows = ["subject_id,grade,age"]
    for index, paths in enumerate(write_dataset(folder / "volumes", subjects=4, seed=2,
                                                shape=(30, 28, 5))):
        subject = paths["mr"].name.removesuffix("_mr.nii.gz")
        for kind in ("mr", "ct", "seg"):
            data, image = load(paths[kind])
            data = data[:, :, 2:3] if index % 2 else data[:, :, 2]
            nib.save(nib.Nifti1Image(data, image.affine),
                     str(folder / f"{subject}_{kind}.nii.gz"))
        rows.append(f"{subject},{index % 2},{41 + 7 * index}")
    (folder / "subjects.csv").write_text("\n".join(rows) + "\n")
    return folder


def slice_sections(model_dir: str) -> dict:
    sections = phantom_sections(model_dir)
    for name in ("MR", "CT", "LABEL"):
        sections[name]["path_to_search"] = "."
    sections["MR"]["spatial_window_size"] = (24, 24, 1)
    sections["NETWORK"]["batch_size"] = 2
    sections["TRAINING"].update(max_iter=2, exclude_fraction_for_inference=0.25)
    sections["INFERENCE"]["border"] = (2, 2, 0)
    return sections


def test_2d_slices_train_and_are_written_back_in_2d(slices, tmp_path):
    settings = configure(slices, slice_sections("run_2d"))
    run(settings)
    # The inference subject of the split has an (X, Y) file; pelvis_001 an (X, Y, 1) one.
    written = commands.infer(settings) + commands.infer(
        settings, inputs=[str(slices / "pelvis_001_mr.nii.gz")], output_dir=str(tmp_path))
    assert len(written) == 4
    for path in written:
        subject = os.path.basename(path).split("_")[1]
        source_data, source = load(slices / f"pelvis_{subject}_mr.nii.gz")
        data, image = load(path)
        assert data.shape == source_data.shape
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
        assert np.all(np.isfinite(data))
    assert {load(path)[0].ndim for path in written} == {2, 3}
    assert {row["task"] for row in commands.evaluate(settings)} == {"organs", "synth_ct"}


def test_image_level_classification_and_regression(slices, tmp_path):
    changes = {
        "NETWORK": {"name": "sfg_vgg", "window_sampling": "resize"},
        "GRADE": {"csv_file": "subjects.csv", "value_column": "grade"},
        "AGE": {"csv_file": "subjects.csv", "value_column": "age"},
        "MULTITASK": {"tasks": "grade, age"},
        "TASK grade": {"type": "classification", "target": "GRADE", "num_classes": 2},
        "TASK age": {"type": "regression", "target": "AGE", "target_shift": 60,
                     "target_scale": 10},
        "INFERENCE": {"border": (0, 0, 0)},
        "TASK organs": None, "TASK synth_ct": None, "CT": None, "LABEL": None}
    settings = configure(slices, slice_sections("run_vgg"), **changes)
    run(settings)
    written = commands.infer(settings)
    folder = slices / "run_vgg" / "inference"
    assert sorted(written) == [str(folder / "age.csv"), str(folder / "grade.csv")]
    split = (slices / "run_vgg" / "dataset_split.csv").read_text().split()
    inferred = sorted(row.split(",")[0] for row in split if row.endswith(",inference"))
    with open(folder / "grade.csv", newline="") as handle:
        grades = list(csv.DictReader(handle))
    assert [row["subject_id"] for row in grades] == inferred
    for row in grades:
        assert float(row["grade_0"]) + float(row["grade_1"]) == pytest.approx(1, abs=1e-5)
        assert row["label"] in ("0", "1")
    with open(folder / "age.csv", newline="") as handle:
        ages = list(csv.DictReader(handle))
    assert [row["subject_id"] for row in ages] == inferred
    assert np.isfinite(float(ages[0]["age_0"]))
    rows = commands.evaluate(settings)
    assert {(row["task"], metric) for row in rows for metric in row
            if metric in ("accuracy", "mae")} == {("grade", "accuracy"), ("age", "mae")}
    # --input files add their rows to the CSVs of another folder.
    commands.infer(settings, inputs=[str(slices / f"pelvis_00{i}_mr.nii.gz") for i in (1, 2)],
                   output_dir=str(tmp_path))
    with open(tmp_path / "age.csv", newline="") as handle:
        assert [row["subject_id"] for row in csv.DictReader(handle)] == [
            "pelvis_001", "pelvis_002"]
