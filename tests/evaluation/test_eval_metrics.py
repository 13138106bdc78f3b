"""Evaluation metrics on hand-computed fixtures, empty structures, and the CSV writer."""

import csv
import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from sfg_app.errors import DataError
from sfg_app.evaluation import metrics
from sfg_app.evaluation.metrics import (
    classification_metrics, hausdorff_distance, psnr, regression_metrics, segmentation_metrics,
    ssim, ssim_map, summarise, surface_hausdorff_distance, write_metrics)

SPACING = (2.0, 0.5, 1.0)


def cube(shape=(20, 20, 20), start=(4, 4, 4), side=8):
    volume = np.zeros(shape, bool)
    volume[tuple(slice(s, s + side) for s in start)] = True
    return volume


# ---- Dice and Hausdorff distances ----

@pytest.mark.parametrize("axis, expected_mm", [(0, 4.0), (1, 1.0), (2, 2.0)])
def test_shifted_cube_dice_and_hausdorff_in_millimetres(axis, expected_mm):
    # An 8-voxel cube shifted by 2 voxels: overlap 6/8 of its volume; every surface point
    # is within 2 voxels of the other surface along the shift axis (2 x spacing mm).
    start = [4, 4, 4]
    start[axis] += 2
    truth, prediction = cube(), cube(start=start)
    assert metrics.dice_score(prediction, truth) == pytest.approx(0.75)
    assert hausdorff_distance(prediction, truth, SPACING) == pytest.approx(expected_mm)
    assert surface_hausdorff_distance(prediction, truth, SPACING, percentile=100) == \
        pytest.approx(expected_mm)
    assert surface_hausdorff_distance(prediction, truth, SPACING) <= expected_mm


def test_slab_shifted_along_an_anisotropic_axis_has_hd95_of_the_shift():
    # One-voxel slabs across the image: every voxel is surface (a neighbour outside along
    # x), each 3 voxels x 2 mm from the other slab.
    truth, prediction = np.zeros((12, 6, 5), bool), np.zeros((12, 6, 5), bool)
    truth[5], prediction[8] = True, True
    assert surface_hausdorff_distance(prediction, truth, SPACING) == pytest.approx(6.0)


def brute_force_hd95(a, b, spacing):
    """SimpleITK's surfaces from explicit neighbour checks (the border replicated: it is not
    a surface), distances from every point pair: from each voxel with a face-neighbour
    outside its structure to the nearest voxel of the other structure with any neighbour
    (face, edge or corner) outside it."""
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=a.ndim) if any(o)]
    faces = [o for o in offsets if sum(map(abs, o)) == 1]

    def contour_points(x, neighbours):
        padded = np.pad(x, 1, mode="edge")
        interior = np.ones_like(x)
        for offset in neighbours:
            interior &= np.roll(padded, offset, tuple(range(x.ndim)))[
                tuple(slice(1, -1) for _ in x.shape)]
        return np.argwhere(x & ~interior) * np.asarray(spacing)

    def directed(source, target):
        distances = cdist(contour_points(source, faces), contour_points(target, offsets))
        return np.percentile(distances.min(axis=1), 95)
    return max(directed(a, b), directed(b, a))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_a_brute_force_computation_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage
    noise = ndimage.gaussian_filter(rng.normal(size=(2, 24, 20, 16)), (0, 2, 2, 2))
    a, b = noise[0] > 0.05, noise[1] > 0.05
    assert surface_hausdorff_distance(a, b, SPACING) == pytest.approx(
        brute_force_hd95(a, b, SPACING))


def test_a_2d_structure_stored_with_a_singleton_axis_uses_its_2d_contour():
    truth, prediction = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    truth[3:11, 3:11] = True
    prediction[5:12, 2:10] = True
    in_2d = surface_hausdorff_distance(prediction, truth, (1.2, 0.8))
    in_3d = surface_hausdorff_distance(prediction[..., None], truth[..., None],
                                       (1.2, 0.8, 5.0))
    assert in_3d == pytest.approx(in_2d)
    assert in_2d == pytest.approx(brute_force_hd95(prediction, truth, (1.2, 0.8)))


def test_empty_structures_give_nan_not_a_crash():
    empty, full = np.zeros((8, 8, 8), bool), cube((8, 8, 8), (2, 2, 2), 3)
    assert math.isnan(metrics.dice_score(empty, empty))
    assert metrics.dice_score(empty, full) == 0.0
    for distance in (hausdorff_distance, surface_hausdorff_distance):
        assert math.isnan(distance(empty, full, (1, 1, 1)))
        assert math.isnan(distance(full, empty, (1, 1, 1)))
        assert math.isnan(distance(empty, empty, (1, 1, 1)))
    # A structure filling the image has no surface (the border is not one), only voxels.
    whole = np.ones((8, 8, 8), bool)
    assert math.isnan(surface_hausdorff_distance(whole, full, (1, 1, 1)))
    assert hausdorff_distance(full, whole, (1, 1, 1)) == pytest.approx(math.sqrt(27))


def test_segmentation_subject_metrics_per_class_with_mask_and_empty_class():
    truth = cube().astype(np.int16)
    prediction = cube(start=(6, 4, 4)).astype(np.int16)
    truth[0:2, 0:2, 0:2] = 2             # class 2 only in the truth
    result = segmentation_metrics(prediction[..., None], truth[..., None],
                              spacing=SPACING, num_classes=4)
    assert list(result) == ["dice_1", "hd95_1", "dice_2", "hd95_2", "dice_3", "hd95_3",
                            "dice_mean", "hd95_mean"]
    assert result["dice_1"] == pytest.approx(0.75)
    assert result["dice_2"] == 0.0 and math.isnan(result["hd95_2"])
    assert math.isnan(result["dice_3"]) and math.isnan(result["hd95_3"])
    assert result["dice_mean"] == pytest.approx(0.375)        # NaN of class 3 skipped
    assert result["hd95_mean"] == pytest.approx(result["hd95_1"])
    # A mask over the overlap only: perfect agreement inside it, class 2 outside it.
    mask = np.zeros(truth.shape, np.uint8)
    mask[6:12, 4:12, 4:12] = 1
    masked = segmentation_metrics(prediction, truth, mask=mask, spacing=SPACING)
    assert masked["dice_1"] == 1.0 and masked["hd95_1"] == 0.0
    assert "dice_2" not in masked      # num_classes from the labels present: 2


# ---- regression ----

def test_mae_rmse_psnr_inside_a_mask():
    truth = np.zeros((4, 4, 2), np.float32)
    truth[0, 0, 0], truth[3, 3, 1] = 100.0, -20.0      # range 120 over the whole volume
    prediction = truth + np.where(np.indices(truth.shape).sum(0) % 2, 3.0, -3.0)
    result = regression_metrics(prediction, truth)
    assert result["mae"] == pytest.approx(3.0) and result["rmse"] == pytest.approx(3.0)
    assert result["psnr"] == pytest.approx(10 * math.log10(120.0 ** 2 / 9.0))
    mask = np.zeros(truth.shape, bool)
    mask[0, 0, 0] = mask[1, 0, 0] = True                 # truth values 100 and 0
    inside = regression_metrics(prediction, truth, mask=mask)
    assert inside["psnr"] == pytest.approx(10 * math.log10(100.0 ** 2 / 9.0))
    fixed = regression_metrics(prediction, truth, mask=mask, data_range=4000.0)
    assert fixed["psnr"] == pytest.approx(10 * math.log10(4000.0 ** 2 / 9.0))


def test_psnr_edge_cases():
    truth = np.linspace(0, 1, 27).reshape(3, 3, 3)
    assert psnr(truth, truth) == math.inf
    assert math.isnan(psnr(truth + 1, np.ones((3, 3, 3))))
    assert psnr(truth + 1, np.ones((3, 3, 3)), data_range=2.0) == pytest.approx(
        10 * math.log10(4.0 / np.mean(truth ** 2)))


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(0)
    from scipy import ndimage
    image = ndimage.gaussian_filter(rng.normal(size=(24, 24, 16)), 2) * 400.0
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    scale = image.max() - image.min()
    noisy = [ssim(image + rng.normal(0, s * scale, image.shape), image) for s in (0.02, 0.1)]
    assert 1.0 > noisy[0] > noisy[1] > 0.0


def test_ssim_of_constant_images_matches_the_formula():
    a, b, data_range = 40.0, 60.0, 100.0
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)    # no variance: contrast term 1
    value = ssim(np.full((9, 9, 9), a), np.full((9, 9, 9), b), data_range=data_range)
    assert value == pytest.approx(expected, rel=1e-9)
    assert math.isnan(ssim(np.full((9, 9, 9), a), np.full((9, 9, 9), b)))   # no range


def test_ssim_map_at_one_voxel_matches_an_explicit_uniform_window():
    # 4 slices: a 7 x 7 x 3 window (the largest odd one along z), sample (co)variances.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(15, 15, 4)), rng.normal(size=(15, 15, 4))
    px, py = x[4:11, 4:11, 0:3], y[4:11, 4:11, 0:3]    # the window centred on (7, 7, 1)
    mx, my = px.mean(), py.mean()
    vx, vy = px.var(ddof=1), py.var(ddof=1)
    cov = ((px - mx) * (py - my)).sum() / (px.size - 1)
    c1, c2 = (0.01 * 3.0) ** 2, (0.03 * 3.0) ** 2
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    local = ssim_map(x, y, 3.0)
    assert local[7, 7, 1] == pytest.approx(expected, rel=1e-9)
    # NaN where the window leaves the image: 3 voxels along x and y, 1 along z.
    valid = np.zeros(x.shape, bool)
    valid[3:12, 3:12, 1:3] = True
    assert np.array_equal(~np.isnan(local), valid)


def test_ssim_works_for_2d_images_and_masks():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(20, 20))
    noisy = image + rng.normal(0, 0.3, image.shape)
    in_2d = ssim(noisy, image, data_range=6.0)
    assert in_2d == pytest.approx(ssim(noisy[..., None], image[..., None], data_range=6.0))
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    assert ssim(noisy, image, mask, 6.0) == pytest.approx(ssim_map(noisy, image, 6.0)[mask].mean())


def test_regression_subject_metrics_for_channels_and_per_subject_values():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(10, 10, 6, 2))
    result = regression_metrics(truth, truth)
    assert result == {"mae": 0.0, "rmse": 0.0, "psnr": math.inf, "ssim": pytest.approx(1.0)}
    age = regression_metrics(np.array([31.0]), np.array([35.0]))
    assert age == {"mae": 4.0, "rmse": 4.0}
    assert classification_metrics(1, np.array([1])) == {"accuracy": 1.0}
    assert classification_metrics(np.int64(0), 1) == {"accuracy": 0.0}


def test_subject_evaluation_errors_name_the_problem():
    labels = np.zeros((4, 4, 4), np.int16)
    with pytest.raises(DataError, match=r"`spacing`.*3 voxel sizes.*spacing=None"):
        segmentation_metrics(labels, labels)
    with pytest.raises(DataError, match=r"differ in shape: \(4, 4, 4\) and \(4, 4, 3\)"):
        regression_metrics(labels, labels[..., :3])
    with pytest.raises(DataError, match=r"mask's shape \(4, 4\)"):
        regression_metrics(labels, labels, mask=np.ones((4, 4)))
    with pytest.raises(DataError, match=r"one channel.*\(4, 4, 4, 2\)"):
        segmentation_metrics(np.zeros((4, 4, 4, 2)), np.zeros((4, 4, 4, 2)),
                         spacing=(1, 1, 1))


# ---- the CSV and the summary ----

def test_metrics_csv_and_summary_are_written_whole(tmp_path):
    rows = [{"subject": "p01", "task": "organs", "dice_1": 0.8, "hd95_1": 3.5},
            {"subject": "p02", "task": "organs", "dice_1": 0.6, "hd95_1": math.nan},
            {"subject": "p03", "task": "organs", "dice_1": 0.7, "hd95_1": 2.5},
            {"subject": "p01", "task": "ct", "mae": 41.5}]
    write_metrics(rows, tmp_path / "out" / "metrics.csv", tmp_path / "out" / "summary.txt")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv",
                                                                      "summary.txt"]
    with open(tmp_path / "out" / "metrics.csv", newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["subject", "task", "dice_1", "hd95_1", "mae"]
    assert read[1]["hd95_1"] == "nan" and read[3]["dice_1"] == "" and read[3]["mae"] == "41.5"
    assert float(read[2]["dice_1"]) == 0.7
    stats = {(s["task"], s["metric"]): s for s in summarise(rows)}
    assert stats["organs", "dice_1"]["mean"] == pytest.approx(0.7)
    assert stats["organs", "dice_1"]["std"] == pytest.approx(0.1)      # sample std
    assert stats["organs", "hd95_1"]["n"] == 2
    assert stats["organs", "hd95_1"]["median"] == pytest.approx(3.0)
    assert math.isnan(stats["ct", "mae"]["std"])
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert text.splitlines()[0].split() == ["task", "metric", "n", "mean", "std", "median"]
    assert text.splitlines()[1].split() == ["organs", "dice_1", "3", "0.7", "0.1", "0.7"]


def test_evaluation_imports_no_deep_learning_framework():
    import ast
    import pathlib

    import sfg_app.evaluation
    forbidden = {"tensorflow", "keras", "torch", "jax"}
    for path in pathlib.Path(sfg_app.evaluation.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & forbidden, path


def test_integer_images_do_not_wrap_around():
    truth = np.array([[[0, 200]]], np.uint8)
    prediction = np.array([[[10, 190]]], np.uint8)
    result = regression_metrics(prediction, truth)
    assert result["mae"] == 10.0 and result["rmse"] == 10.0
    assert result["psnr"] == pytest.approx(10 * math.log10(200.0 ** 2 / 100.0))
