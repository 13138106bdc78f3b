"""The configs in configs/: they load, baselines differ from the demo only where they
must, and (marked slow) each trains and infers for real on the embedded data."""

import pathlib
import subprocess
import sys

import pytest

from sfg_app.config import load_settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.ini"))


def flat(settings) -> dict:
    return {(section, key): value for section, keys in settings.to_dict().items()
            for key, value in keys.items()}


def differences(name: str) -> set:
    demo = flat(load_settings(str(ROOT / "configs" / "demo.ini")))
    other = flat(load_settings(str(ROOT / "configs" / f"{name}.ini")))
    keys = set(demo) | set(other)
    return {key for key in keys if demo.get(key) != other.get(key)}


def test_every_shipped_config_loads():
    assert len(CONFIGS) >= 10
    for path in CONFIGS:
        settings = load_settings(str(path))
        assert settings.system.model_dir.is_relative_to(ROOT / "runs")


def test_demo_reads_the_embedded_phantoms():
    settings = load_settings(str(ROOT / "configs" / "demo.ini"))
    for section in settings.inputs.values():
        assert section.path_to_search == (ROOT / "data" / "phantoms",)


@pytest.mark.parametrize("name, expected", [
    ("hard_shared", {("NETWORK", "name")}),
    ("cross_stitch", {("NETWORK", "name")}),
    ("sfg_fixed", {("SFG", "learn_probabilities"), ("SFG", "init")}),
    ("three_tasks", {("MULTITASK", "tasks")}),
])
def test_baselines_differ_from_the_demo_only_where_they_must(name, expected):
    changed = differences(name) - {("SYSTEM", "model_dir"), ("SYSTEM", "dataset_split_file"),
                                   ("NETWORK", "histogram_ref_file"),
                                   ("INFERENCE", "save_seg_dir"),
                                   ("EVALUATION", "save_csv_dir")}
    added_task = {key for key in changed if key[0] == "TASK body"}
    assert changed - added_task == expected


@pytest.mark.parametrize("name, task", [("single_organs", "organs"),
                                        ("single_synth_ct", "synth_ct")])
def test_single_task_baselines_keep_one_demo_task_unchanged(name, task):
    demo = load_settings(str(ROOT / "configs" / "demo.ini"))
    single = load_settings(str(ROOT / "configs" / f"{name}.ini"))
    assert single.network.name == "highres3dnet"
    assert list(single.tasks) == [task]
    assert single.tasks[task] == demo.tasks[task]
    assert single.training == demo.training
    assert single.network.layer_scale == demo.network.layer_scale


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in CONFIGS if p.stem != "mni_tissue"],
                         ids=lambda p: p.stem)
def test_shipped_config_trains_and_infers(path, tmp_path):
    """Two iterations and inference of each config on the embedded data, shrunk in
    width and window so that it runs in seconds."""
    window = "(24, 24, 1)" if "2d" in path.stem else "(16, 16, 16)"
    image = "MR"
    overrides = [f"SYSTEM.model_dir={tmp_path / 'run'}", "TRAINING.max_iter=2",
                 "TRAINING.validation_every_n=1", "NETWORK.layer_scale=0.25",
                 "NETWORK.batch_size=1", "SYSTEM.mixed_precision=none",
                 "SYSTEM.strategy=default", f"{image}.spatial_window_size={window}",
                 f"{image}.pixdim=(8, 8, 8)", "INFERENCE.border=(2, 2, 0)"]
    command = [sys.executable, "-m", "sfg_app.cli.train", "--config", str(path)]
    for override in overrides:
        command += ["--set", override]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    command[2] = "sfg_app.cli.infer"
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list((tmp_path / "run" / "inference").glob("*.nii.gz"))
