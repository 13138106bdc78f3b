"""scripts/bench/bench_infer.py end to end on a small volume, its untimed columns: the
multiply-adds per window voxel against a hand count, the window voxels of sfg's grid (K
times in `sample` mode) and of MONAI's sliding window where MONAI is installed, and the
outputs each method writes."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
METHODS = ("dense", "map", "sample", "large")
SCRIPT = REPO / "scripts" / "bench" / "bench_infer.py"

# HighRes3DNet at layer_scale 1 (widths 16, 32, 64, 64, 64; 3 residual units of two
# convolutions in the first three stages) with heads of 6 and 1 channels.
HIGHRES_MULTIPLY_ADDS = (27 * (1 * 16 + 6 * 16 * 16) + 27 * (16 * 32 + 6 * 32 * 32)
                         + 27 * (32 * 64 + 6 * 64 * 64) + 2 * 27 * 64 * 64 + 64 * 6 + 64 * 1)
# MONAI's HighResNet with its default layers, 1 channel in and 7 out: a 3x3x3 convolution
# to 16, three residual stages of 3 blocks of two 3x3x3 convolutions (16, 32, 64 channels;
# a block that widens pads its shortcut, no convolution), then 1x1 convolutions 64 -> 80
# -> 7.
MONAI_MULTIPLY_ADDS = (27 * 16 + 27 * 6 * 16 * 16 + 27 * (16 * 32 + 5 * 32 * 32)
                       + 27 * (32 * 64 + 5 * 64 * 64) + 64 * 80 + 80 * 7)


def table(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if fields and fields[0] in (*METHODS, "monai") and len(fields) == 8:
            rows[fields[0]] = fields
    return rows


@pytest.mark.slow
def test_a_small_run_counts_the_arithmetic_of_each_method(tmp_path):
    models = ["dense", "sample", "large"]
    with_monai = importlib.util.find_spec("monai") is not None
    if with_monai:
        models.append("monai")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--shape", "20", "18", "16", "--window", "16",
         "--mc-samples", "2", "--work", str(tmp_path), "--models", *models],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"float32 matmul, 4096\^2, TensorFlow \(the roof\): [\d.]+ GFLOP/s",
                     done.stdout)
    rows = table(done.stdout)
    assert set(rows) == set(models), done.stdout
    # sfg's grid: border round(0.25 * 16 / 2) = 2, windows every 12 voxels: 2 x 2 x 2.
    assert rows["dense"][4] == f"{HIGHRES_MULTIPLY_ADDS:,d}" == "1,162,096"
    assert rows["dense"][5] == f"{8 * 16 ** 3:,d}"
    assert rows["sample"][4] == "1,162,096"
    assert rows["sample"][5] == f"{2 * 8 * 16 ** 3:,d}"
    # The default windows: the whole volume and the border on each side, one window.
    assert rows["large"][4] == "1,162,096"
    assert rows["large"][5] == f"{24 * 22 * 20:,d}"
    written = {model: sorted(p.name for p in (tmp_path / f"out_{model}").glob("*.nii.gz"))
               for model in models}
    assert written["dense"] == written["large"] == ["volume_organs.nii.gz",
                                                    "volume_synth_ct.nii.gz"]
    assert written["sample"] == ["volume_organs.nii.gz", "volume_organs_var.nii.gz",
                                 "volume_synth_ct.nii.gz", "volume_synth_ct_var.nii.gz"]
    if with_monai:
        # MONAI's windows start every int(16 * 0.75) = 12 voxels and end with the volume:
        # 2 x 2 x 1 windows.
        assert rows["monai"][5] == f"{4 * 16 ** 3:,d}"
        assert rows["monai"][4] == f"{MONAI_MULTIPLY_ADDS:,d}" == "807,904"
        assert written["monai"] == written["dense"]
