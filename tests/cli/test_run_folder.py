"""A run folder holds one network and has one writer: a config that describes another
network is refused by every command before any work, with the folder left byte for byte
as it was; a second `sfg_train` on a folder in use exits 2 at once."""

import ast
import hashlib
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from sfg_app.cli import export as cli_export
from sfg_app.cli import groups as cli_groups
from sfg_app.cli import infer as cli_infer
from sfg_app.cli import train as cli_train
from sfg_app.config import save_settings, settings_from_dict
from sfg_app.demo.configs import TINY_SHAPE, phantom_sections
from sfg_app.demo.phantoms import write_dataset
from sfg_app.io.run_folder import RunFolder


def sections(model_dir: str) -> dict:
    """The tiny run, two iterations, with CT windowed so that it can be an input too."""
    return phantom_sections(model_dir, {"CT": {"spatial_window_size": (16, 16, 16)},
                                        "TRAINING": {"max_iter": 2}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run_folder")
    write_dataset(folder / "data", subjects=3, seed=1, shape=TINY_SHAPE)
    config = folder / "config.yaml"
    save_settings(settings_from_dict(sections("run"), base_dir=folder), config)
    assert cli_train.main(["--config", str(config)]) == 0
    return {"config": str(config), "run": folder / "run"}


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes' digest (and every folder)."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders:
            found[os.path.relpath(os.path.join(root, name), folder)] = "folder"
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = hashlib.sha256(
                Path(path).read_bytes()).hexdigest()
    return found


def test_training_records_the_network_and_its_settings(trained):
    run = RunFolder(trained["run"])
    identity = yaml.safe_load(run.network.read_text())
    assert identity["NETWORK.name"] == "sfg_highres3dnet"
    assert identity["MULTITASK.tasks"] == ["organs", "synth_ct"]
    assert identity["TASK organs head"] == "voxel x 6"
    assert identity["input channels"] == 1 and identity["SFG.connectivity"] == "mixed"
    assert run.settings.exists() and (trained["run"] / RunFolder.LOCK).exists()


def _without_ct_task(config):
    config["MULTITASK"]["tasks"] = "organs"
    del config["TASK synth_ct"]


def _with_body_task(config):
    config["MULTITASK"]["tasks"] = "organs, synth_ct, body"
    config["TASK body"] = {"type": "segmentation", "target": "LABEL", "num_classes": 2}


CHANGES = {  # change: (what it does to the config's sections, the key named)
    "task order": (lambda c: c["MULTITASK"].update(tasks="synth_ct, organs"),
                   "MULTITASK.tasks"),
    "a task removed": (_without_ct_task, "MULTITASK.tasks"),
    "a task added": (_with_body_task, "TASK body head"),
    "network name": (lambda c: c["NETWORK"].update(name="hard_shared"), "NETWORK.name"),
    "layer_scale": (lambda c: c["NETWORK"].update(layer_scale=0.5), "NETWORK.layer_scale"),
    "num_classes": (lambda c: c["TASK organs"].update(num_classes=7), "TASK organs head"),
    "an input section added": (lambda c: c["MULTITASK"].update(image="MR, CT"),
                               "MULTITASK.image"),
    "target_scale": (lambda c: c["TASK synth_ct"].update(target_scale=100),
                     "TASK synth_ct.target_scale"),
}
COMMANDS = {
    "resume": (cli_train, ["--set", "TRAINING.max_iter=4"], "resume training"),
    "sfg_infer": (cli_infer, [], "infer with its checkpoints"),
    "sfg_groups": (cli_groups, [], "report its learned grouping"),
    "sfg_export": (cli_export, ["--task", "organs"], "export its trained network"),
}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_changed_network_is_refused_and_the_folder_is_untouched(trained, change, command,
                                                                   capsys, tmp_path):
    edit, key = CHANGES[change]
    module, extra, what = COMMANDS[command]
    config = sections(str(trained["run"]))
    edit(config)
    path = tmp_path / "changed.yaml"
    save_settings(settings_from_dict(config, base_dir=trained["run"].parent), path)
    before = snapshot(trained["run"])
    assert module.main(["--config", str(path), *extra]) == 2
    error = capsys.readouterr().err
    assert "describes another network than the one trained in" in error
    assert f"so it cannot {what}" in error
    assert f"  {key}: trained " in error and ", now " in error
    assert "give the changed network a new [SYSTEM] model_dir" in error
    assert "WARNING" not in error and "Traceback" not in error
    assert snapshot(trained["run"]) == before


def test_nothing_to_do_and_check_leave_the_folder_untouched(trained, capsys):
    before = snapshot(trained["run"])
    assert cli_train.main(["--config", trained["config"]]) == 0
    assert "Nothing to do: the checkpoint is at iteration 2" in capsys.readouterr().err
    assert cli_train.main(["--config", trained["config"], "--check"]) == 0
    assert snapshot(trained["run"]) == before


def test_a_resume_with_other_training_settings_keeps_the_earlier_record(tmp_path):
    run = RunFolder(tmp_path)
    run.record_settings("lr: 0.1\n")
    os.utime(run.settings, (1_700_000_000, 1_700_000_000))
    run.record_settings("lr: 0.1\n")  # unchanged: nothing kept twice
    assert not (tmp_path / RunFolder.SETTINGS_HISTORY).exists()
    run.record_settings("lr: 0.01\n")
    assert run.settings.read_text() == "lr: 0.01\n"
    kept, = (tmp_path / RunFolder.SETTINGS_HISTORY).iterdir()
    assert kept.name.startswith("settings_2023-11-") and kept.read_text() == "lr: 0.1\n"


HOLD = textwrap.dedent("""
    import sys, time
    from sfg_app.io.run_folder import RunFolder
    with RunFolder(sys.argv[1]).writer("sfg_train --config held.ini"):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_writer_is_refused_at_once_naming_the_holder(trained, capsys, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(trained["run"])],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(trained["run"])
        start = time.monotonic()
        assert cli_train.main(["--config", trained["config"],
                               "--set", "TRAINING.max_iter=4"]) == 2
        assert time.monotonic() - start < 30
        error = capsys.readouterr().err
        assert f"is in use by another sfg_train (pid {holder.pid}: sfg_train --config " \
               "held.ini)" in error
        assert "give this run another [SYSTEM] model_dir" in error
        assert snapshot(trained["run"]) == before
        # Readers do not take the lock: they read the last whole checkpoint meanwhile.
        assert cli_infer.main(["--config", trained["config"], "--output",
                               str(tmp_path / "read_meanwhile")]) == 0
        assert len(os.listdir(tmp_path / "read_meanwhile")) == 2
    finally:
        holder.kill()
        holder.wait()
    # The operating system released the lock with its process: no clean-up needed.
    with RunFolder(trained["run"]).writer("next"):
        pass


def test_a_damaged_identity_record_is_named(tmp_path):
    run = RunFolder(tmp_path)
    run.network.write_text("- a list\n")
    with pytest.raises(Exception, match=r"network.yaml is not the mapping that sfg_train"):
        run.check_identity({"NETWORK.name": "x"}, "infer")


def _checkpoint_values(run: Path) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if "save_counter" not in key}


@pytest.mark.slow
def test_two_trainings_started_together_one_refused_the_other_as_alone(tmp_path):
    """Two `sfg_train` on one folder at once: one exits 2 without touching it, the other
    trains as the same run alone does, to the last bit."""
    import numpy as np

    write_dataset(tmp_path / "data", subjects=3, seed=1, shape=TINY_SHAPE)
    configs = {}
    for name in ("shared", "alone"):
        config = sections(name)
        config["TRAINING"].update(max_iter=8, save_every_n=4)
        configs[name] = tmp_path / f"{name}.yaml"
        save_settings(settings_from_dict(config, base_dir=tmp_path), configs[name])
    command = [sys.executable, "-m", "sfg_app.cli.train", "--config", str(configs["shared"])]
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    both = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
            for _ in range(2)]
    outcomes = sorted((process.wait(timeout=600), process.stderr.read()) for process in both)
    (ok, _), (refused, message) = outcomes
    assert (ok, refused) == (0, 2), outcomes
    assert "is in use by another sfg_train (pid " in message
    assert subprocess.run([sys.executable, "-m", "sfg_app.cli.train", "--config",
                           str(configs["alone"])], env=environment,
                          capture_output=True).returncode == 0
    shared, alone = (_checkpoint_values(tmp_path / name) for name in ("shared", "alone"))
    assert shared.keys() == alone.keys() and len(shared) > 10
    for key in shared:
        np.testing.assert_array_equal(shared[key], alone[key], err_msg=key)


def _renamed_input(trained, tmp_path, name: str) -> Path:
    source = trained["run"].parent / "data" / "pelvis_000_mr.nii.gz"
    target = tmp_path / name
    target.write_bytes(source.read_bytes())
    return target


def test_an_input_whose_output_cannot_be_written_under_its_name_is_refused_first(
        trained, tmp_path, capsys):
    scan = _renamed_input(trained, tmp_path, "s" * 230 + "_mr.nii.gz")
    out = tmp_path / "out"
    assert cli_infer.main(["--config", trained["config"], "--input", str(scan),
                           "--output", str(out)]) == 2
    error = capsys.readouterr().err
    assert "is written first under a temporary name" in error
    assert "Shorten the input's file name" in error
    assert not out.exists() or os.listdir(out) == []


def test_a_volume_larger_than_the_memory_is_refused_naming_it(trained, tmp_path, capsys,
                                                              monkeypatch):
    from sfg_app.io import readers

    scan = _renamed_input(trained, tmp_path, "big_mr.nii.gz")
    monkeypatch.setattr(readers, "available_memory", lambda: 2 ** 16)
    out = tmp_path / "out"
    assert cli_infer.main(["--config", trained["config"], "--input", str(scan),
                           "--output", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"The image '{scan}' holds" in error and "Crop it to the region" in error
    assert not out.exists() or os.listdir(out) == []


def test_check_refuses_a_label_beyond_int32_before_the_cast(trained, tmp_path, capsys):
    """int64 4294967298 would be class 2 after a cast to int32; --check names the file."""
    import nibabel as nib
    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    for source in (trained["run"].parent / "data").iterdir():
        (data / source.name).write_bytes(source.read_bytes())
    label = nib.load(data / "pelvis_001_seg.nii.gz")
    values = np.asarray(label.dataobj).astype(np.int64)
    values[0, 0, 0] = 4294967298
    nib.save(nib.Nifti1Image(values, label.affine, dtype=np.int64),
             data / "pelvis_001_seg.nii.gz")
    config = tmp_path / "config.yaml"
    save_settings(settings_from_dict(sections("run"), base_dir=tmp_path), config)
    assert cli_train.main(["--config", str(config), "--check"]) == 2
    error = capsys.readouterr().err
    assert "pelvis_001_seg.nii.gz' has values up to 4.29497e+09" in error
    assert "beyond any class label" in error
    assert not (tmp_path / "run").exists()


# -- the layout: every name under the folder, spelled in run_layout.py only ---------------

REPO = Path(__file__).resolve().parents[2]
OWNER = REPO / "sfg_app" / "run_layout.py"


def layout(run: RunFolder) -> dict:
    """Every path RunFolder names, by the attribute that names it."""
    return {
        "settings": run.settings, "settings_history": run.settings_history,
        "network": run.network, "lock": run.lock, "split": run.split,
        "histogram_ref": run.histogram_ref, "cache": run.cache("training"),
        "checkpoints": run.checkpoints, "tensorboard": run.tensorboard("train"),
        "command_log": run.command_log("sfg_train"),
        "grouping_history": run.grouping_history, "grouping": run.grouping,
        "grouping_yaml": run.grouping_yaml, "grouping_png": run.grouping_png,
        "grouping_history_png": run.grouping_history_png,
        "inference": run.inference(), "inference_sample": run.inference("sample"),
        "evaluation": run.evaluation(), "evaluation_sample": run.evaluation("sample"),
        "metrics": run.metrics(), "metrics_summary": run.metrics_summary(),
        "export": run.export, "exported_keras": run.exported_keras("organs"),
        "exported_savedmodel": run.exported_savedmodel("organs"),
    }


def test_every_name_of_the_layout_is_its_own_and_inside_the_folder(tmp_path):
    paths = layout(RunFolder(tmp_path / "run"))
    assert all(path.is_relative_to(tmp_path / "run") and path != tmp_path / "run"
               for path in paths.values()), paths
    assert len(set(paths.values())) == len(paths)
    assert RunFolder(tmp_path).metrics(tmp_path / "elsewhere") == \
        tmp_path / "elsewhere" / RunFolder.METRICS


def test_the_schema_defaults_are_the_run_folders(tmp_path):
    settings = settings_from_dict(sections("run"), base_dir=tmp_path)
    run = RunFolder(settings.system.model_dir)
    assert Path(settings.system.dataset_split_file) == run.split
    assert Path(settings.network.histogram_ref_file) == run.histogram_ref
    assert Path(settings.inference.save_seg_dir) == run.inference()
    assert Path(settings.evaluation.save_csv_dir) == run.evaluation()


def _string_constants(path: Path):
    """(line, text, used as a path component) of every string constant of ``path``,
    docstrings and f-string parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            part = parents[node] if isinstance(parents.get(node), ast.JoinedStr) else node
            user = parents.get(part)
            as_path = (isinstance(user, ast.BinOp) and isinstance(user.op, ast.Div)) or (
                isinstance(user, ast.Call) and part in user.args
                and getattr(user.func, "attr", getattr(user.func, "id", None))
                in ("join", "Path", "UnderModelDir"))
            yield node.lineno, node.value, as_path


def run_level_spellings(roots) -> list[str]:
    """Where a file of the run folder is named, or one of its folders used as a path
    component, outside run_layout.py."""
    files = [RunFolder.SETTINGS, RunFolder.NETWORK, RunFolder.LOCK, RunFolder.SPLIT,
             RunFolder.HISTOGRAM_REF,
             RunFolder.GROUPING_HISTORY, RunFolder.GROUPING_YAML, RunFolder.GROUPING_PNG,
             RunFolder.GROUPING_HISTORY_PNG, RunFolder.METRICS, RunFolder.METRICS_SUMMARY]
    named = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, files))
                       + r"|sfg_[a-z]+\.log)(?!\w)")
    folders = (RunFolder.SETTINGS_HISTORY, RunFolder.CACHE, RunFolder.CHECKPOINTS,
               RunFolder.TENSORBOARD,
               RunFolder.GROUPING, RunFolder.INFERENCE, RunFolder.EVALUATION, RunFolder.EXPORT)
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path == OWNER:
                continue
            for line, text, as_path in _string_constants(path):
                folder = text.rstrip("_") in folders or text == RunFolder.LOG_SUFFIX
                if named.search(text) or (as_path and folder):
                    found.append(f"{path.relative_to(root.parent)}:{line}: {text[:60]!r}")
    return found


def test_run_level_names_are_spelled_in_run_layout_only():
    found = run_level_spellings([REPO / "sfg_app", REPO / "scripts"])
    assert not found, "run-level names outside RunFolder:\n" + "\n".join(found)


def test_the_spelling_check_finds_a_literal(tmp_path):
    (tmp_path / "a.py").write_text(
        'import os\n"""Reads metrics.csv."""\nos.path.join(d, "checkpoints")\n'
        'f"{d}/x" / "grouping"\nos.path.join(d, f"{prog}.log")\n'
        'x = "inference"  # a phase, not a path\n')
    found = run_level_spellings([tmp_path])
    assert [f.split(":")[1] for f in found] == ["2", "3", "4", "5"], found
