"""The commands at the edges, run as a user runs them (``main(argv)``, real NIfTI files, a
really trained network): outputs that never escape their folder or replace a file
silently, bad inputs and paths reported in one line with exit status 2 before any work,
`sfg_train --check`, the log file and a console without CUDA noise.

Each failure is checked for its message and for what it left: nothing outside the output
folder created or changed (the commands' own log files aside).
"""

import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from sfg_app.cli import evaluate, infer, train
from sfg_app.cli.common import build_parser, run_command
from sfg_app.demo.configs import ini_text, phantom_sections
from sfg_app.demo.phantoms import write_dataset
from sfg_app.errors import TrainingStopped


def sections(model_dir="run", data="data", mr=None) -> dict:
    """The project's config: a dense network trained for two iterations on 2D windows;
    `mr` changes [MR]."""
    return phantom_sections(model_dir, data=data, changes={
        "SYSTEM": {"seed": 2, "num_threads": 1},
        "MR": dict({"spatial_window_size": (16, 16, 1)}, **(mr or {})),
        "NETWORK": {"name": "hard_shared", "batch_size": 2},
        "TRAINING": {"max_iter": 2, "save_every_n": 2, "validation_every_n": 0,
                     "exclude_fraction_for_inference": 0.34},
        "INFERENCE": None})


CONFIG = ini_text(sections())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Three phantoms and a network trained on them for two iterations."""
    folder = tmp_path_factory.mktemp("reliability")
    write_dataset(folder / "data", subjects=3, seed=4, shape=(24, 20, 6))
    (folder / "c.ini").write_text(CONFIG)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert train.main(["-c", "c.ini"]) == 0
    finally:
        os.chdir(cwd)
    return folder


@pytest.fixture
def at(project, monkeypatch):
    monkeypatch.chdir(project)
    return project


def _snapshot(root, *excluded):
    """Every file under `root` but those in `excluded` folders and the commands' logs:
    its size, modification time and first bytes."""
    skip = [os.path.abspath(p) for p in excluded]
    found = {}
    for folder, _, files in os.walk(root):
        if any(os.path.abspath(folder).startswith(s) for s in skip):
            continue
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".log"):
                continue
            stat = os.lstat(path)
            with open(path, "rb") as handle:
                found[path] = (stat.st_size, stat.st_mtime_ns, handle.read(64))
    return found


def _infer(*arguments):
    return infer.main(["-c", "c.ini", *map(str, arguments)])


def _error_line(capsys) -> str:
    """The command's message: from its `prog: error:` line to the end."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err[err.index("sfg_"):] if "sfg_" in err else ""


def test_an_existing_output_is_refused_then_replaced_with_overwrite(at, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    manual = out / "pelvis_000_organs.nii.gz"
    manual.write_bytes(b"my manual labels")
    before = _snapshot(at)
    assert _infer("--input", "data/pelvis_000_mr.nii.gz", "--output", out) == 2
    message = _error_line(capsys)
    assert f"1 output(s) exist already: {manual}" in message and "--overwrite" in message
    assert manual.read_bytes() == b"my manual labels"
    assert sorted(p.name for p in out.iterdir()) == ["pelvis_000_organs.nii.gz"]
    assert _snapshot(at) == before

    assert _infer("--input", "data/pelvis_000_mr.nii.gz", "--output", out, "--overwrite") == 0
    assert nib.load(manual).shape[:3] == nib.load(at / "data" / "pelvis_000_mr.nii.gz").shape[:3]
    assert _snapshot(at) == before


def test_overwrite_as_a_config_key(at, capsys, tmp_path):
    out = tmp_path / "out"
    assert _infer("--input", "data/pelvis_001_mr.nii.gz", "--output", out) == 0
    assert _infer("--input", "data/pelvis_001_mr.nii.gz", "--output", out) == 2
    assert "exist already" in _error_line(capsys)
    assert _infer("--input", "data/pelvis_001_mr.nii.gz", "--output", out,
                  "--set", "INFERENCE.overwrite=true") == 0


def test_an_input_is_never_overwritten_even_with_overwrite(at, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = out / "p_organs.nii.gz"
    shutil.copy(at / "data" / "pelvis_000_mr.nii.gz", victim)
    content = victim.read_bytes()
    # The id of p_organs.nii.gz is "p" once "_organs" is removed: its organs output is itself.
    assert _infer("--input", victim, "--output", out, "--overwrite",
                  "--set", "MR.filename_removefromid=_organs$") == 2
    assert f"The output {victim} would overwrite an input image" in _error_line(capsys)
    assert victim.read_bytes() == content
    assert sorted(p.name for p in out.iterdir()) == ["p_organs.nii.gz"]


def test_an_output_name_that_is_a_link_out_of_the_folder_is_refused(at, capsys, tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside.nii.gz"
    out.mkdir()
    outside.write_bytes(b"not yours")
    os.symlink(outside, out / "pelvis_000_synth_ct.nii.gz")
    before = _snapshot(at)
    assert _infer("--input", "data/pelvis_000_mr.nii.gz", "--output", out, "--overwrite") == 2
    assert "outside its folder" in _error_line(capsys)
    assert outside.read_bytes() == b"not yours"
    assert sorted(p.name for p in out.iterdir()) == ["pelvis_000_synth_ct.nii.gz"]
    assert _snapshot(at) == before


@pytest.mark.parametrize("file_name, problem", [("a..b_mr.nii.gz", "'..'"),
                                                ("_mr.nii.gz", "empty")])
def test_a_subject_id_that_cannot_name_an_output_is_refused(at, capsys, tmp_path,
                                                            file_name, problem):
    scan = tmp_path / file_name
    shutil.copy(at / "data" / "pelvis_000_mr.nii.gz", scan)
    before = _snapshot(at)
    assert _infer("--input", scan, "--output", tmp_path / "out") == 2
    message = _error_line(capsys)
    assert str(scan) in message and problem in message
    assert not any((tmp_path / "out").iterdir())
    assert _snapshot(at) == before


def test_a_subject_id_from_a_csv_file_that_escapes_is_refused(at, capsys, tmp_path):
    table = tmp_path / "mr.csv"
    table.write_text(f"subject_id,path\n../../etc,{at / 'data' / 'pelvis_000_mr.nii.gz'}\n")
    (tmp_path / "csv.ini").write_text(ini_text(sections(at / "run", at / "data", mr={
        "path_to_search": None, "filename_contains": None, "csv_file": table})))
    before = _snapshot(at)
    assert infer.main(["-c", str(tmp_path / "csv.ini"), "--output", str(tmp_path / "out")]) == 2
    message = _error_line(capsys)
    assert _snapshot(at) == before
    assert ("[MR] the subject id of '" in message and "is '../../etc': it holds a path "
            "separator '/'" in message)


def test_two_inputs_with_one_name_are_refused(at, capsys, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(at / "data" / "pelvis_000_mr.nii.gz", tmp_path / folder)
    a, b = (tmp_path / f / "pelvis_000_mr.nii.gz" for f in ("a", "b"))
    assert _infer("--input", a, b, "--output", tmp_path / "out") == 2
    message = _error_line(capsys)
    assert str(a) in message and str(b) in message and "same names" in message
    assert not any((tmp_path / "out").iterdir())


def test_an_output_folder_that_is_a_file_fails_before_any_work(at, capsys, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file")
    before = _snapshot(at)
    assert _infer("--input", "data/pelvis_000_mr.nii.gz", "--output", blocker) == 2
    message = _error_line(capsys)
    assert f"Cannot write the inference outputs in {blocker}" in message
    assert "a file is there, not a folder" in message
    assert blocker.read_text() == "a file" and _snapshot(at) == before


def test_the_evaluation_folder_is_checked_too(at, capsys, tmp_path):
    blocker = tmp_path / "metrics"
    blocker.write_text("a file")
    assert evaluate.main(["-c", "c.ini", "--set", f"EVALUATION.save_csv_dir={blocker}"]) == 2
    assert f"Cannot write the evaluation's metrics in {blocker}" in _error_line(capsys)


def test_an_input_with_other_channels_than_the_network_is_named(at, capsys, tmp_path):
    mr = nib.load(at / "data" / "pelvis_000_mr.nii.gz")
    data = np.asarray(mr.dataobj, np.float32)
    scan = tmp_path / "two_mr.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([data, data, data], axis=-1), mr.affine), scan)
    assert _infer("--input", scan, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"sfg_infer: error: The input {scan} has 3 channel(s), but the network in" in err
    assert "trained on 1" in err
    assert err.count("\n") < 5  # no flood of TensorFlow warnings
    assert not any((tmp_path / "out").iterdir())


def test_a_volume_thinner_than_the_window_is_warned_about_and_logged(at, capsys, tmp_path):
    mr = nib.load(at / "data" / "pelvis_002_mr.nii.gz")
    thin = tmp_path / "thin_mr.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(mr.dataobj)[:10], mr.affine), thin)
    assert _infer("--input", thin, "--output", tmp_path / "out") == 0
    err = capsys.readouterr().err
    warning = (f"sfg_infer: warning: thin ({thin}): 10 voxel(s) along axis x after "
               "preprocessing, thinner than the window's 16")
    assert warning in err
    assert nib.load(tmp_path / "out" / "thin_organs.nii.gz").shape[:3] == (10, 20, 6)
    log = (at / "run" / "sfg_infer.log").read_text()
    assert warning in log and "Inference with the checkpoint of iteration 2" in log
    assert "=== " in log and "sfg_infer -c c.ini --input" in log


def test_train_log_holds_the_console_lines(project):
    log = (project / "run" / "sfg_train.log").read_text()
    assert "sfg_train -c c.ini (sfg " in log
    assert "Grouping report" not in log  # a network without SFG layers
    assert "iteration 2" in log


def test_os_errors_of_a_command_exit_2_naming_the_path(tmp_path, capsys):
    (tmp_path / "c.ini").write_text(CONFIG)

    def full_disk(args, settings):
        with open("/dev/full", "wb") as handle:
            handle.write(b"\0" * 65536)
            handle.flush()

    parser = build_parser("sfg_test", "A test command.", "sfg_test -c c.ini")
    assert run_command(parser, ["-c", str(tmp_path / "c.ini")], full_disk) == 2
    message = _error_line(capsys)
    assert message.startswith("sfg_test: error: No space left on device (the disk is full)")


def test_a_run_stopped_by_sigterm_exits_143_with_its_message(tmp_path, capsys):
    (tmp_path / "c.ini").write_text(CONFIG)

    def stopped(args, settings):
        raise TrainingStopped("Stopped by SIGTERM at iteration 7.")

    parser = build_parser("sfg_test", "A test command.", "sfg_test -c c.ini")
    assert run_command(parser, ["-c", str(tmp_path / "c.ini")], stopped) == 143
    assert "sfg_test: Stopped by SIGTERM at iteration 7." in capsys.readouterr().err


# -- sfg_train --check ---------------------------------------------------------------------

def test_check_passes_on_good_data_without_writing(project, tmp_path, monkeypatch):
    shutil.copytree(project / "data", tmp_path / "data")
    (tmp_path / "c.ini").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    # A subprocess, as a user runs it: its console must be free of CUDA noise.
    done = subprocess.run([sys.executable, "-m", "sfg_app.cli.train", "-c", "c.ini", "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Config and data are fine: 3 subject(s), 9 file(s) read" in done.stderr
    for noise in ("cuInit", "absl::InitializeLog", "cudart_stub", "oneDNN custom operations"):
        assert noise not in done.stderr
    assert not (tmp_path / "run").exists()


def test_check_lists_every_problem_by_file(project, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(project / "data", data)
    labels = nib.load(data / "pelvis_000_seg.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(labels.dataobj) * 3, labels.affine),
             data / "pelvis_000_seg.nii.gz")  # labels up to 15 for 6 classes
    ct = nib.load(data / "pelvis_001_ct.nii.gz")
    values = np.asarray(ct.dataobj, np.float32)
    values[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(values, ct.affine), data / "pelvis_001_ct.nii.gz")
    mr = data / "pelvis_002_mr.nii.gz"
    mr.write_bytes(mr.read_bytes()[:300])  # truncated
    (tmp_path / "c.ini").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    assert train.main(["-c", "c.ini", "--check"]) == 2
    message = _error_line(capsys)
    assert message.startswith("sfg_train: error: 3 problem(s) in the data of 3 subject(s):")
    assert "pelvis_000_seg.nii.gz" in message and "pelvis_001_ct.nii.gz" in message
    assert f"Cannot read the image '{mr}'" in message
    assert not (tmp_path / "run").exists()


def test_check_finds_sections_on_different_grids(project, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    shutil.copytree(project / "data", data)
    ct = nib.load(data / "pelvis_001_ct.nii.gz")
    moved = ct.affine.copy()
    moved[:3, 3] += 40.0
    nib.save(nib.Nifti1Image(np.asarray(ct.dataobj), moved), data / "pelvis_001_ct.nii.gz")
    (tmp_path / "c.ini").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    assert train.main(["-c", "c.ini", "--check"]) == 2
    message = _error_line(capsys)
    assert "1 problem(s)" in message and "pelvis_001" in message
    assert "pelvis_001_ct.nii.gz" in message


def test_training_into_a_model_dir_blocked_by_a_file_fails_in_one_line(tmp_path, project,
                                                                       monkeypatch, capsys):
    shutil.copytree(project / "data", tmp_path / "data")
    (tmp_path / "c.ini").write_text(CONFIG)
    (tmp_path / "run").write_text("a file")
    monkeypatch.chdir(tmp_path)
    assert train.main(["-c", "c.ini"]) == 2
    assert "Cannot write the run's checkpoints and logs in" in _error_line(capsys)
    assert (tmp_path / "run").read_text() == "a file"

