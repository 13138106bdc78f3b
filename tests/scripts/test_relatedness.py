"""scripts/experiments/relatedness.py: the sweep's preset, its rows from the levels'
compare.py tables and grouping reports (level-free methods repeated at every level), and
its report (CSV, table, plot)."""

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from sfg_app.evaluation.grouping import summarise, write_grouping_yaml
from script_modules import load_script

REPO = Path(__file__).resolve().parents[2]
relatedness = load_script("scripts/experiments/relatedness.py")
compare = relatedness.compare


def _level(work: Path, level: float, rows: list) -> None:
    """A level's compare.py table, and a grouping report for each SFG run: layer i of
    seed s has a shared fraction of (i + s) / 8 (8 kernels)."""
    folder = work / relatedness.level_name(level)
    table = []
    for method, seed, dice, mae in rows:
        row = {c: "" for c in compare.COLUMNS}
        row.update(method=method, seed=str(seed), dice_mean=dice, mae_hu=mae,
                   train_minutes="1.5")
        table.append(row)
        if method.startswith("sfg"):
            layers = {}
            for i in range(5):
                shared = min(i + seed, 8)
                counts = (8 - shared, 0, shared)
                layers[f"sfg_{i}"] = np.repeat(np.eye(3) * 0.97 + 0.01, counts, axis=0)
            run = folder / "runs" / method / f"seed{seed}" / "grouping"
            run.mkdir(parents=True)
            write_grouping_yaml(summarise(layers, ["organs", "signal", "shared"]),
                                run / "grouping.yaml")
    compare.write_results(folder / "results" / f"sweep_{relatedness.level_name(level)}.csv",
                          table)


def test_rows_repeat_level_free_methods_and_read_the_shared_fractions(tmp_path):
    _level(tmp_path, 0.0, [("single_seg", 1, "0.75", ""), ("sfg", 1, "0.7", "0.08")])
    _level(tmp_path, 1.0, [("sfg", 1, "0.6", "0.09"), ("single_seg", 1, "0.1", "")])
    rows = relatedness.sweep_rows("sweep", [0.0, 1.0], ["single_seg"], tmp_path)
    assert [(r["method"], r["relatedness"]) for r in rows] == [
        ("sfg", "0"), ("single_seg", "0"), ("sfg", "1"), ("single_seg", "1")]
    single = [r for r in rows if r["method"] == "single_seg"]
    assert {r["organs_dice"] for r in single} == {"0.75"}  # the first level's run
    sfg = rows[0]
    assert sfg["signal_mae"] == "0.08" and list(sfg) == relatedness.COLUMNS
    assert [float(sfg[f"shared_sfg_{i}"]) for i in range(5)] == [1 / 8, 2 / 8, 3 / 8,
                                                                 4 / 8, 5 / 8]
    relatedness.write_report("sweep", rows, tmp_path / "results")
    with open(tmp_path / "results" / "sweep.csv", newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    table = (tmp_path / "results" / "sweep.md").read_text(encoding="utf-8")
    assert "| sfg | 0 | 1 | 0.700 | 0.080 | 0.125 |" in table
    assert (tmp_path / "results" / "sweep" / "shared_fraction.png").read_bytes()[:4] == \
        b"\x89PNG"


@pytest.mark.parametrize("change, message", [
    ({"levels": [0, 2]}, r"levels: expected a list of distinct numbers in \[0, 1\]"),
    ({"levels": [0.5, 0.5]}, r"levels: expected a list of distinct numbers"),
    ({"level_free": ["nope"]}, r"level_free: expected a list of methods of methods"),
])
def test_malformed_sweeps_are_named(tmp_path, change, message):
    preset = yaml.safe_load((REPO / "scripts" / "experiments" / "presets" /
                             "relatedness.yaml").read_text())
    preset.update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(preset))
    with pytest.raises(compare.CompareError, match=message):
        relatedness.load_sweep(path)


def test_a_budget_names_the_sweep(tmp_path):
    _level(tmp_path, 0.0, [("sfg", 1, "0.7", "0.08")])
    (tmp_path / "r0" / "results" / "sweep_r0.csv").rename(
        tmp_path / "r0" / "results" / "relatedness_900it_r0.csv")
    results = tmp_path / "results"
    assert relatedness.main(["relatedness", "--iterations", "900", "--report-only",
                             "--work", str(tmp_path), "--results", str(results)]) == 0
    with open(results / "relatedness_900it.csv", newline="", encoding="utf-8") as handle:
        assert [r["organs_dice"] for r in csv.DictReader(handle)] == ["0.7"]
    assert relatedness.main(["relatedness", "--iterations", "0", "--report-only",
                             "--results", str(results)]) == 2


def test_the_committed_preset_loads():
    data, levels, free = relatedness.load_sweep(
        REPO / "scripts" / "experiments" / "presets" / "relatedness.yaml")
    assert levels == [0.0, 0.5, 1.0] and free == ["single_seg"]
    assert {"sfg", "hard_shared", "cross_stitch", "single_signal"} <= set(data["methods"])
