"""Output names that stay in their folder, existing files that are not replaced silently,
and folders checked for writing before any work."""

import errno
import os

import pytest

from sfg_app.errors import DataError, OutputError
from sfg_app.io.paths import (check_name, describe_os_error, name_problem, output_path,
                              real_paths, writable_folder)


@pytest.mark.parametrize("name, problem", [
    ("", "empty"), ("  ", "empty"), ("../etc", "'/'"), ("a/b", "'/'"), ("a\\b", "'\\'"),
    ("..", "'..'"), ("x..y", "'..'"), ("a\nb", "control character"), ("a\0b", "NUL"),
])
def test_names_that_would_leave_their_folder_are_refused(name, problem):
    assert problem in name_problem(name)
    with pytest.raises(DataError, match=r"the subject id of 'f.nii' is .*stay inside"):
        check_name(name, "the subject id of 'f.nii'", DataError)


@pytest.mark.parametrize("name", ["sub-01", "pelvis_000", "a.b", "ünïcode", "with space"])
def test_ordinary_names_pass(name):
    assert name_problem(name) is None and check_name(name, "id") == name


def test_output_path_refuses_a_link_out_of_its_folder(tmp_path):
    folder, outside = tmp_path / "out", tmp_path / "elsewhere.nii.gz"
    folder.mkdir()
    outside.write_bytes(b"keep")
    os.symlink(outside, folder / "s_task.nii.gz")
    with pytest.raises(OutputError, match="outside its folder"):
        output_path(folder, "s_task.nii.gz", overwrite=True)
    assert outside.read_bytes() == b"keep"


def test_output_path_refuses_existing_files_unless_overwrite_and_inputs_always(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"manual labels")
    with pytest.raises(OutputError, match=r"a\.nii\.gz exists already.*--overwrite"):
        output_path(tmp_path, "a.nii.gz")
    assert output_path(tmp_path, "a.nii.gz", overwrite=True) == str(tmp_path / "a.nii.gz")
    with pytest.raises(OutputError, match="would overwrite an input image"):
        output_path(tmp_path, "a.nii.gz", overwrite=True,
                    protected=real_paths([tmp_path / "a.nii.gz"]))
    assert output_path(tmp_path, "new.nii.gz") == str(tmp_path / "new.nii.gz")


def test_writable_folder_creates_the_folder_and_leaves_nothing(tmp_path):
    folder = tmp_path / "a" / "b"
    assert writable_folder(folder, "the outputs") == str(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_writable_folder_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(OutputError, match=r"Cannot write the outputs in .*out.*a file is where a folder should be"):
        writable_folder(tmp_path / "out" / "sub", "the outputs")
    with pytest.raises(OutputError, match="a file is there, not a folder"):
        writable_folder(tmp_path / "out", "the outputs")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_writable_folder_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="no permission"):
            writable_folder(folder, "the outputs")
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_described_with_its_path():
    with pytest.raises(OSError) as error:
        with open("/dev/full", "wb") as handle:
            handle.write(b"\0" * 65536)
            handle.flush()
    assert error.value.errno == errno.ENOSPC
    text = describe_os_error(error.value)
    assert "the disk is full" in text and ("/dev/full" in text or error.value.filename is None)


def test_an_output_whose_temporary_name_is_too_long_is_refused_before_any_work(tmp_path):
    """An input named with 230 characters: its output name fits in 255 bytes, the hidden
    temporary name it is written under first does not."""
    name = "s" * 230 + "_organs.nii.gz"
    assert len(name) <= 255
    with pytest.raises(OutputError, match=r"written first under a temporary name \(2\d\d "
                                          r"bytes\), longer than the 255 bytes"):
        output_path(tmp_path, name)
    assert output_path(tmp_path, "s" * 100 + "_organs.nii.gz").startswith(str(tmp_path))
