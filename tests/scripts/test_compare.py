"""scripts/experiments/compare.py: the smoke preset end to end (runs, CSV, report, skipping
the pairs already done), and the pure parts (a row from a run's files, the rows of
test-time architectures and what is left to run, the mean ± sd table, the per-method
configs, preset errors, the one-subprocess runner with stub commands)."""

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from sfg_app.evaluation.grouping import summarise, write_grouping_yaml
from sfg_app.evaluation.metrics import write_metrics
from script_modules import load_script

REPO = Path(__file__).resolve().parents[2]


compare = load_script("scripts/experiments/compare.py")


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _metric_rows(with_regression=True):
    rows = []
    for subject, dice, mae in (("s1", (0.9, 0.2, 0.6, 0.8, 0.7), 40.0),
                               ("s2", (0.9, 0.4, 0.8, 0.6, 0.5), 60.0)):
        rows.append({"subject": subject, "task": "organs", "hd95_1": 3.0,
                     **{f"dice_{c}": d for c, d in enumerate(dice, start=1)},
                     "dice_mean": float(np.mean(dice))})
        if with_regression:
            rows.append({"subject": subject, "task": "synth_ct", "mae": mae,
                         "rmse": 80.0, "psnr": 25.0, "ssim": 0.75})
    return rows


def _grouping(tmp_path, drop_max_probability=False):
    rng = np.random.default_rng(0)
    probabilities = {f"sfg_{i}": rng.dirichlet(np.ones(3), size=4) for i in range(5)}
    summary = summarise(probabilities, ["organs", "synth_ct", "shared"])
    if drop_max_probability:
        for entry in summary.values():
            entry.pop("mean_max_probability")
    path = write_grouping_yaml(summary, tmp_path / "grouping.yaml", step=4)
    return compare.read_grouping(path), summary


def test_row_from_a_metrics_csv_and_a_grouping_report(tmp_path):
    write_metrics(_metric_rows(), tmp_path / "metrics.csv")
    grouping, summary = _grouping(tmp_path)
    row = compare.result_row("sfg", 2, compare.read_csv(tmp_path / "metrics.csv"), grouping,
                             400, 1.5)
    assert list(row) == compare.COLUMNS
    # Body (class 1) is left out: organs are bladder 2, prostate 3, rectum 4, bone 5.
    assert float(row["dice_bladder"]) == pytest.approx(0.3)
    assert float(row["dice_bone"]) == pytest.approx(0.6)
    assert float(row["dice_mean"]) == pytest.approx(np.mean([0.2, 0.6, 0.8, 0.7, 0.4, 0.8,
                                                              0.6, 0.5]))
    assert float(row["mae_hu"]) == pytest.approx(50.0)
    assert float(row["ssim"]) == pytest.approx(0.75)
    for layer, entry in summary.items():
        assert float(row[f"maxp_{layer}"]) == pytest.approx(entry["mean_max_probability"],
                                                            rel=1e-5)
    assert (row["method"], row["seed"], row["iterations"]) == ("sfg", "2", "400")
    assert compare.COLUMNS[-1] == "architecture" and row["architecture"] == ""
    assert compare.result_row("sfg", 2, [], None, 400, 1.5, "map")["architecture"] == "map"


def test_row_of_a_test_architecture_keeps_the_parents_run_columns(tmp_path):
    write_metrics(_metric_rows(), tmp_path / "metrics.csv")
    grouping, _ = _grouping(tmp_path)
    metrics = compare.read_csv(tmp_path / "metrics.csv")
    parent = compare.result_row("sfg", 2, metrics, grouping, 400, 1.5, "map")
    write_metrics(_metric_rows(with_regression=False), tmp_path / "metrics.csv")
    row = compare.architecture_row(parent, "expected", compare.read_csv(tmp_path / "metrics.csv"))
    assert list(row) == compare.COLUMNS
    assert (row["method"], row["seed"], row["iterations"], row["architecture"]) == (
        "sfg_test_expected", "2", "400", "expected")
    assert row["train_minutes"] == parent["train_minutes"] == "1.5"
    assert all(row[f"maxp_{x}"] == parent[f"maxp_{x}"] != "" for x in compare.SFG_LAYERS)
    assert row["dice_mean"] == parent["dice_mean"] and row["mae_hu"] == ""  # its own metrics


def test_test_architecture_names():
    assert compare.architecture_method("sfg", "sample") == "sfg_test_sample"
    assert compare.parent_method("sfg_test_sample") == ("sfg", "sample")
    assert compare.parent_method("sfg_kl0_test_expected") == ("sfg_kl0", "expected")
    assert compare.parent_method("sfg") is None
    assert compare.parent_method("sfg_test_other") is None
    assert compare.is_learned_sfg("sfg_kl0") and not compare.is_learned_sfg("sfg_test_map")
    assert not compare.is_learned_sfg("sfg_fixed")
    assert not compare.is_learned_sfg("sfg_fixed_shared")


def test_plan_trains_missing_pairs_and_only_infers_missing_test_rows():
    tests = {"sfg": ["expected", "sample"]}
    assert compare.plan_runs(["single_seg", "sfg"], [1, 2], tests, set()) == [
        ("single_seg", 1, True, []), ("single_seg", 2, True, []),
        ("sfg", 1, True, ["expected", "sample"]), ("sfg", 2, True, ["expected", "sample"])]
    done = {("single_seg", 1), ("sfg", 1), ("sfg_test_expected", 1), ("sfg_test_sample", 1),
            ("sfg", 2), ("sfg_test_sample", 2)}
    assert compare.plan_runs(["single_seg", "sfg"], [1, 2], tests, done) == [
        ("single_seg", 2, True, []), ("sfg", 2, False, ["expected"])]
    assert compare.plan_runs(["sfg"], [1], tests, done) == []


def test_steps_of_one_run(tmp_path):
    steps = compare.run_steps(True, ["sample"], tmp_path)
    assert [(key, command) for key, command, _ in steps] == [
        (None, "train"), (None, "infer"), (None, "evaluate"),
        ("sample", "infer"), ("sample", "evaluate")]
    assert steps[0][2] == [] and steps[3][2] == steps[4][2] == [
        "INFERENCE.architecture=sample", f"INFERENCE.save_seg_dir={tmp_path / 'inference_sample'}",
        f"EVALUATION.save_csv_dir={tmp_path / 'evaluation_sample'}"]
    assert [c for _, c, _ in compare.run_steps(False, ["expected"], tmp_path)] == [
        "infer", "evaluate"]


def test_one_run_calls_the_commands_in_order_and_stops_at_a_failure(tmp_path, monkeypatch,
                                                                    capsys):
    from sfg_app.cli import evaluate, infer, train

    calls = []
    codes = {"train": 0, "infer": 0, "evaluate": 0}
    for module in (train, infer, evaluate):
        name = module.__name__.rsplit(".", 1)[1]
        monkeypatch.setattr(module, "main",
                            lambda argv, name=name: calls.append((name, argv)) or codes[name])
    status = tmp_path / "status.json"
    plan = {"config": "c.ini", "model_dir": str(tmp_path), "seed": 3, "status": str(status),
            "steps": compare.run_steps(True, ["expected"], tmp_path)}
    assert compare.main(["--_one-run", json.dumps(plan)]) == 0
    assert [name for name, _ in calls] == ["train", "infer", "evaluate", "infer", "evaluate"]
    assert calls[0][1] == ["--config", "c.ini", "--set", f"SYSTEM.model_dir={tmp_path}",
                           "--set", "SYSTEM.seed=3", "--set", "INFERENCE.overwrite=true"]
    assert calls[3][1][8:10] == ["--set", "INFERENCE.architecture=expected"]
    result = json.loads(status.read_text(encoding="utf-8"))
    assert result["done"] == [0, 1, 2, 3, 4] and result["failed"] is None
    assert result["train_minutes"] >= 0
    calls.clear()
    codes["infer"] = 2
    assert compare.one_run(plan) == 2
    assert [name for name, _ in calls] == ["train", "infer"]
    assert json.loads(status.read_text(encoding="utf-8"))["failed"] == 1


def test_row_leaves_empty_what_a_run_lacks(tmp_path):
    write_metrics(_metric_rows(with_regression=False), tmp_path / "metrics.csv")
    grouping, _ = _grouping(tmp_path, drop_max_probability=True)
    row = compare.result_row("single_seg", 1, compare.read_csv(tmp_path / "metrics.csv"),
                             grouping, 400, 1.0)
    assert row["mae_hu"] == row["psnr"] == row["ssim"] == ""
    assert all(row[f"maxp_{layer}"] == "" for layer in compare.SFG_LAYERS)
    row = compare.result_row("hard_shared", 1, compare.read_csv(tmp_path / "metrics.csv"),
                             None, 400, 1.0)
    assert row["maxp_sfg_0"] == "" and row["dice_mean"] != ""


def test_mean_sd_table_over_seeds():
    assert compare.mean_sd([0.4, 0.6], 3) == "0.500 ± 0.141"
    assert compare.mean_sd([0.5], 2) == "0.50"
    assert compare.mean_sd([math.nan], 2) == "–"
    blank = dict.fromkeys(compare.COLUMNS, "")
    rows = [{**blank, "method": "sfg", "seed": "1", "dice_mean": "0.4", "maxp_sfg_0": "0.5",
             "maxp_sfg_1": "0.7"},
            {**blank, "method": "sfg", "seed": "2", "dice_mean": "0.6", "maxp_sfg_0": "0.6"},
            {**blank, "method": "single_seg", "seed": "1", "dice_mean": "0.3"}]
    table = compare.summary_table(rows, compare.method_order(["sfg", "single_seg"]))
    lines = table.splitlines()
    assert lines[0].startswith("| method | seeds | dice_mean | mae_hu | dice_bladder")
    assert lines[2].startswith("| single_seg | 1 | 0.300 | – |")
    assert lines[3].startswith("| sfg | 2 | 0.500 ± 0.141 | – |")
    assert lines[3].endswith("| 0.600 ± 0.000 |")  # mean over layers, then over seeds


def test_test_architecture_rows_sort_right_after_their_method():
    names = ["sfg_test_sample", "sfg_kl0", "sfg", "sfg_kl0_test_map", "single_seg",
             "sfg_test_expected", "other_test_map"]
    assert compare.method_order(names) == [
        "single_seg", "sfg", "sfg_test_sample", "sfg_test_expected", "sfg_kl0",
        "sfg_kl0_test_map", "other_test_map"]
    blank = dict.fromkeys(compare.COLUMNS, "")
    rows = [{**blank, "method": m, "seed": "1", "dice_mean": "0.5", "architecture": a}
            for m, a in (("sfg_test_expected", "expected"), ("sfg", "map"))]
    table = compare.summary_table(rows, compare.method_order([r["method"] for r in rows]))
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
        "| sfg", "| sfg_test_expected"]
    note = compare.architecture_note(rows, ["sfg", "sfg_test_expected"])
    assert "sfg map" in note and "<method>_test_<A>" in note


def test_method_config_drops_unused_tasks_and_unset_keys_and_keeps_paths(tmp_path):
    base = REPO / "configs" / "demo_2d.ini"
    config = compare.method_config(base, {"MULTITASK.tasks": "organs",
                                          "SFG.learn_probabilities": False,
                                          "SFG.impl": None,
                                          "SYSTEM.dataset_split_file": "split.csv"}, tmp_path)
    assert config.has_section("TASK organs") and not config.has_section("TASK synth_ct")
    assert config.get("SFG", "learn_probabilities") == "false"
    assert not config.has_option("SFG", "impl") and config.has_option("SFG", "connectivity")
    assert config.get("MR", "path_to_search") == str(REPO / "data" / "phantoms")
    assert config.get("SYSTEM", "dataset_split_file") == str(tmp_path / "split.csv")
    assert config.get("MR", "spatial_window_size") == "(64, 64, 1)"


GOOD_PRESET = {"base_config": str(REPO / "configs" / "demo_2d.ini"),
               "phantoms": {"subjects": 3, "seed": 1}, "iterations": 4, "seeds": [1],
               "methods": {"sfg": {}}}


@pytest.mark.parametrize("change, message", [
    ({"surprise": 1}, "unknown top-level key 'surprise'"),
    ({"methods": None}, "missing top-level key 'methods'"),
    ({"seeds": []}, "seeds: expected a non-empty list"),
    ({"methods": {"sfg": {"NETWORK": "x"}}}, "methods.sfg.NETWORK: expected SECTION.key"),
    ({"set": {"TRAINING.max_iter": 3}}, "set.TRAINING.max_iter: .*none the script sets"),
    ({"methods": {"sfg_test_map": {}}}, "methods: expected a mapping of method names"),
    ({"test_architectures": {"sfg_fixed": ["map"]}},
     "test_architectures.sfg_fixed: expected a learned SFG method"),
    ({"test_architectures": {"sfg": ["mean"]}}, "test_architectures.sfg: expected a non-empty"),
    ({"test_architectures": {"sfg": []}}, "test_architectures.sfg: expected a non-empty"),
])
def test_malformed_presets_are_named(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in {**GOOD_PRESET, **change}.items()
                                    if v is not None}))
    with pytest.raises(compare.CompareError, match=message) as error:
        compare.load_preset(path)
    assert str(path) in str(error.value)
    path.write_text(yaml.safe_dump(GOOD_PRESET))
    assert compare.load_preset(path).methods == {"sfg": {}}
    assert compare.load_preset(path).test_architectures == {}
    path.write_text(yaml.safe_dump({**GOOD_PRESET, "test_architectures": {"sfg": ["sample"]}}))
    assert compare.load_preset(path).test_architectures == {"sfg": ["sample"]}


def test_a_budget_is_its_own_experiment(tmp_path, capsys):
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(GOOD_PRESET))
    preset = compare.load_preset(path)
    assert compare.with_budget(preset, None) == preset
    longer = compare.with_budget(preset, 1000)
    assert (longer.name, longer.iterations) == ("paper_1000it", 1000)
    assert longer._replace(name=preset.name, iterations=preset.iterations) == preset
    with pytest.raises(compare.CompareError, match="--iterations: expected a positive"):
        compare.with_budget(preset, 0)
    results = tmp_path / "results"
    assert compare.main([str(path), "--iterations", "1000", "--report-only",
                         "--work", str(tmp_path / "work"), "--results", str(results)]) == 0
    assert (results / "paper_1000it.md").exists() and not (results / "paper.md").exists()


def test_architecture_of_a_method_config(tmp_path):
    base = REPO / "configs" / "demo_2d.ini"
    for overrides, expected in (({"NETWORK.name": "highres3dnet"}, ""),
                                ({"NETWORK.name": "sfg_highres3dnet"}, "map"),
                                ({"NETWORK.name": "sfg_highres3dnet",
                                  "INFERENCE.architecture": "expected"}, "expected")):
        path = tmp_path / "method.ini"
        with open(path, "w") as handle:
            compare.method_config(base, overrides, tmp_path).write(handle)
        assert compare.architecture_of(path) == expected


def test_smoke_preset_end_to_end_then_skipped(tmp_path, capsys):
    work, results = tmp_path / "work", tmp_path / "results"
    assert compare.main(["smoke", "--work", str(work), "--results", str(results)]) == 0
    with open(results / "smoke.csv", newline="") as handle:
        assert next(csv.reader(handle)) == [
            "method", "seed", "dice_mean", "mae_hu", "dice_bladder", "dice_prostate",
            "dice_rectum", "dice_bone", "psnr", "ssim", "maxp_sfg_0", "maxp_sfg_1",
            "maxp_sfg_2", "maxp_sfg_3", "maxp_sfg_4", "iterations", "train_minutes",
            "architecture"]
    rows = _rows(results / "smoke.csv")
    assert [(r["method"], r["seed"], r["iterations"]) for r in rows] == [
        ("single_seg", "1", "4"), ("sfg", "1", "4"), ("sfg_test_expected", "1", "4")]
    single, sfg, expected = rows
    assert single["mae_hu"] == "" and single["maxp_sfg_0"] == ""
    assert [r["architecture"] for r in rows] == ["", "map", "expected"]
    assert expected["train_minutes"] == sfg["train_minutes"]
    assert expected["maxp_sfg_0"] == sfg["maxp_sfg_0"] and float(expected["mae_hu"]) > 0
    assert (work / "runs" / "sfg" / "seed1" / "evaluation_expected" / "metrics.csv").exists()
    assert 0 <= float(single["dice_mean"]) <= 1 and float(sfg["mae_hu"]) > 0
    assert all(0 < float(sfg[f"maxp_sfg_{i}"]) <= 1 for i in range(5))
    # One split for both runs, written before them, none in the runs' folders.
    assert (work / "split.csv").read_text(encoding="utf-8").count("inference") == 1
    assert not list(work.glob("runs/*/seed1/dataset_split.csv"))
    report = (results / "smoke.md").read_text(encoding="utf-8")
    assert "| single_seg | 1 |" in report and "| sfg | 1 |" in report
    assert report.index("| sfg | 1 |") < report.index("| sfg_test_expected | 1 |")
    assert "**sfg**" in report
    assert (results / "smoke" / "allocation_sfg.png").stat().st_size > 0
    assert (results / "smoke" / "history_sfg_seed1.png").stat().st_size > 0

    log = work / "runs" / "sfg" / "seed1" / "compare.log"
    stamp = log.stat().st_mtime_ns
    capsys.readouterr()
    start = time.monotonic()
    assert compare.main(["smoke", "--work", str(work), "--results", str(results)]) == 0
    assert time.monotonic() - start < 15
    assert "sfg seed 1: in" in capsys.readouterr().out
    assert log.stat().st_mtime_ns == stamp
    assert _rows(results / "smoke.csv") == rows

    # A missing test-architecture row: only its inference and evaluation run again.
    compare.write_results(results / "smoke.csv", rows[:2])
    assert compare.main(["smoke", "--work", str(work), "--results", str(results)]) == 0
    last = log.read_text(encoding="utf-8").rsplit("--_one-run", 1)[1]
    assert "(steps: infer expected, evaluate expected)" in last and "sfg_train" not in last
    assert [r["method"] for r in _rows(results / "smoke.csv")] == [
        "single_seg", "sfg", "sfg_test_expected"]
