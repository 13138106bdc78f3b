"""Files and folders appear whole or not at all."""

import os

import pytest

from sfg_app.io.atomic import atomic_path


def _leftovers(folder):
    return [name for name in os.listdir(folder) if name.startswith(".")]


def test_a_file_replaces_its_target_and_a_failure_leaves_the_old_one(tmp_path):
    target = tmp_path / "out.nii.gz"
    target.write_text("old")
    with atomic_path(target) as temporary:
        assert temporary.endswith(".nii.gz") and temporary != str(target)
        open(temporary, "w").write("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        open(temporary, "w").write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "new" and not _leftovers(tmp_path)


def test_a_folder_replaces_its_target_folder_and_a_failure_leaves_the_old_one(tmp_path):
    target = tmp_path / "task_savedmodel"
    target.mkdir()
    (target / "old.pb").write_text("old")
    with atomic_path(target) as temporary:
        os.makedirs(os.path.join(temporary, "variables"))
        open(os.path.join(temporary, "saved_model.pb"), "w").write("new")
    assert sorted(os.listdir(target)) == ["saved_model.pb", "variables"]
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        os.makedirs(temporary)
        open(os.path.join(temporary, "saved_model.pb"), "w").write("half")
        raise RuntimeError("killed")
    assert (target / "saved_model.pb").read_text() == "new" and not _leftovers(tmp_path)
