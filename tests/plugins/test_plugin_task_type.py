"""A task type installed as a plugin (an entry point of the group `sfg_app.task_types`,
from a package that is not sfg) is validated, trained, inferred and evaluated like a
built-in one, through the commands a user runs (`main(argv)`, real NIfTI files)."""

import csv
import os
import pathlib
import re

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from sfg_app import registry
from sfg_app.cli import evaluate, infer, train
from sfg_app.demo.configs import ini_text, phantom_sections
from sfg_app.demo.phantoms import write_dataset

PLUGIN_FOLDER = pathlib.Path(__file__).resolve().parent

CONFIG = ini_text(phantom_sections(changes={
    "SYSTEM": {"seed": 3, "num_threads": 1},
    "MR": {"spatial_window_size": (16, 16, 1)},
    "CT": None,
    "DIST": {"path_to_search": "data", "filename_contains": "_dist"},
    "NETWORK": {"batch_size": 2},
    "MULTITASK": {"tasks": "organs, boundary"},
    "TASK synth_ct": None,
    "TASK boundary": {"type": "distance", "target": "DIST", "clip_mm": 30},
    "TRAINING": {"max_iter": 2, "save_every_n": 2, "exclude_fraction_for_inference": 0.34},
    "INFERENCE": None}))


def _install_plugin(site: pathlib.Path, monkeypatch) -> None:
    """What `pip install` of a package declaring the entry point leaves on sys.path."""
    info = site / "sfg_distance_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sfg-distance-plugin\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[sfg_app.task_types]\ndistance = sfg_distance_task:DistanceTask\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(PLUGIN_FOLDER))
    monkeypatch.setattr(registry.TASKS, "_plugins", None)  # entry points read anew


def _write_distance_maps(folder: pathlib.Path) -> None:
    """Per subject, the signed distance (mm, negative inside) to the organs' boundary."""
    for path in sorted(folder.glob("*_seg.nii.gz")):
        image = nib.load(path)
        inside = np.asarray(image.dataobj) > 0
        spacing = image.header.get_zooms()[:3]
        distance = (ndimage.distance_transform_edt(~inside, sampling=spacing)
                    - ndimage.distance_transform_edt(inside, sampling=spacing))
        nib.save(nib.Nifti1Image(distance.astype(np.float32), image.affine),
                 str(path).replace("_seg", "_dist"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    write_dataset(tmp_path / "data", subjects=3, seed=4, shape=(24, 20, 6))
    _write_distance_maps(tmp_path / "data")
    (tmp_path / "c.ini").write_text(CONFIG)
    _install_plugin(tmp_path / "site", monkeypatch)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_plugin_task_type_trains_infers_and_is_evaluated(project, capsys):
    assert "distance" in registry.TASKS.names()
    assert train.main(["-c", "c.ini"]) == 0
    assert infer.main(["-c", "c.ini"]) == 0
    assert evaluate.main(["-c", "c.ini"]) == 0
    capsys.readouterr()

    # Its own key reached the settings saved with the run.
    assert "clip_mm: 30.0" in (project / "run" / "settings.yaml").read_text()
    # Its outputs, the extra "inside" volume included, in the input's geometry.
    inferred = sorted((project / "run" / "inference").glob("*_boundary*"))
    subject = inferred[0].name.split("_boundary")[0]
    assert [p.name for p in inferred] == [f"{subject}_boundary.nii.gz",
                                          f"{subject}_boundary_inside.nii.gz"]
    source = nib.load(project / "data" / f"{subject}_mr.nii.gz")
    distances = nib.load(inferred[0])
    inside = nib.load(inferred[1])
    for image in (distances, inside):
        assert image.shape[:3] == source.shape[:3]
        np.testing.assert_allclose(image.affine, source.affine, atol=1e-5)
    values = np.asarray(distances.dataobj)
    assert np.all(np.abs(values) <= 30.0 + 1e-4)
    np.testing.assert_array_equal(np.asarray(inside.dataobj), values < 0)
    # Its own metrics, beside the segmentation's.
    with open(project / "run" / "evaluation" / "metrics.csv", newline="") as handle:
        rows = {row["task"]: row for row in csv.DictReader(handle)}
    assert rows["boundary"]["subject"] == subject
    assert float(rows["boundary"]["mae_mm"]) >= 0.0
    assert 0.0 <= float(rows["boundary"]["inside_dice"]) <= 1.0
    assert "dice_mean" in rows["organs"] and rows["boundary"]["dice_mean"] == ""


@pytest.mark.parametrize("line, message", [
    ("clip_mm = -1", r"c\.ini, line \d+: invalid value for \[TASK boundary\] clip_mm\. "
                     r"Expected a number > 0\. Received clip_mm = '-1'"),
    ("num_classes = 2", r"c\.ini, line \d+: \[TASK boundary\] num_classes does not apply "
                        r"here: \[TASK boundary\] is a distance task, and num_classes is for "
                        r"classification and segmentation tasks only"),
    ("loss = dice", r"invalid value for \[TASK boundary\] loss\. Expected a loss for "
                    r"distance: huber, l1\. Received loss = 'dice'"),
])
def test_a_plugin_task_types_keys_are_checked_with_the_config(project, capsys, line,
                                                              message):
    config = project / "c.ini"
    config.write_text(config.read_text().replace("clip_mm = 30", f"clip_mm = 30\n{line}")
                      .replace("clip_mm = 30\nclip_mm = -1", "clip_mm = -1"))
    assert train.main(["-c", "c.ini", "--check"]) == 2
    assert re.search(message, capsys.readouterr().err), message
    assert not os.path.exists(project / "run")


def test_the_reference_documents_a_plugin_task_types_keys(project, capsys):
    assert train.main(["--help-config"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "clip_mm = 10.0" in out and "Only for distance tasks." in out
    assert "distance: huber, l1" in out
    assert "Only for distance, regression and segmentation tasks." in out
