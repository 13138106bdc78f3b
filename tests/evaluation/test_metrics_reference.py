"""Our metrics against their reference implementations: Dice and Hausdorff distances against
SimpleITK's filters, PSNR and SSIM against scikit-image's, on random, 2D-as-3D, thin and
phantom volumes (issue 10)."""

import ast
import math
import pathlib

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

skimage_metrics = pytest.importorskip("skimage.metrics")

from sfg_app.demo import phantoms as P  # noqa: E402
from sfg_app.evaluation import metrics as M  # noqa: E402

SPACING = (0.8, 1.0, 2.5)
REL = 1e-6          # Dice, PSNR, SSIM
HD_MM = 1e-4        # Hausdorff distances (SimpleITK's distance maps are float32)


# ---- the references ----

def _image(array, spacing):
    """A SimpleITK image of a numpy ``(x, y[, z])`` array: SimpleITK's arrays are
    ``(z, y, x)``, its spacing ``(x, y, z)``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).T))
    image.SetSpacing([float(s) for s in spacing])
    return image


def _array(image):
    return sitk.GetArrayFromImage(image).T


def reference_dice(prediction, truth, label):
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_image(truth.astype(np.uint8), (1,) * truth.ndim),
                    _image(prediction.astype(np.uint8), (1,) * truth.ndim))
    return overlap.GetDiceCoefficient(label)


def reference_hausdorff(prediction, truth, spacing):
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(_image(prediction.astype(np.uint8), spacing),
                      _image(truth.astype(np.uint8), spacing))
    return hausdorff.GetHausdorffDistance()


def reference_surface_hausdorff(prediction, truth, spacing, percentile=95.0):
    """SimpleITK's surface distances (``LabelContour`` voxels of one binary read on the
    ``Abs(SignedMaurerDistanceMap)`` of the other), the larger directed percentile."""
    def directed(source, target):
        distance = _array(sitk.Abs(sitk.SignedMaurerDistanceMap(
            _image(target.astype(np.uint8), spacing), insideIsPositive=False,
            squaredDistance=False, useImageSpacing=True)))
        contour = _array(sitk.LabelContour(_image(source.astype(np.uint8), spacing))) > 0
        return np.percentile(distance[contour].astype(np.float64), percentile)
    return max(directed(prediction, truth), directed(truth, prediction))


def reference_ssim(prediction, truth, data_range, mask=None, win_size=7):
    """scikit-image's SSIM; with a mask, the mean of its SSIM map over the mask after the
    same border crop as its mean."""
    value, local = skimage_metrics.structural_similarity(
        truth, prediction, data_range=data_range, win_size=win_size, gaussian_weights=False,
        use_sample_covariance=True, full=True)
    if mask is None:
        return value
    crop = (slice((win_size - 1) // 2, -((win_size - 1) // 2)),) * truth.ndim
    return local[crop][mask[crop]].mean()


# ---- volumes ----

def random_labels(seed, shape):
    """Two correlated label maps of smoothed noise: class 1 a shell around class 2 (holes
    and nested structures, where Hausdorff conventions part), both touching the border."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(2,) + shape), (0, 2, 2, 1)[:len(shape) + 1])
    noise /= noise.std()
    truth = np.digitize(noise[0], [0.3, 1.0])
    prediction = np.digitize(0.8 * noise[0] + 0.6 * noise[1], [0.3, 1.0])
    return prediction, truth


def random_images(seed, shape):
    """A smooth image in HU-like units and a noisy, blurred prediction of it."""
    rng = np.random.default_rng(seed)
    truth = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) * 3000.0 + 40.0
    prediction = ndimage.gaussian_filter(truth, 0.7) + rng.normal(0, 25.0, shape)
    return prediction, truth


@pytest.fixture(scope="module")
def phantom_pair():
    """Two phantom subjects on the first one's (anisotropic, maybe oblique) tiny grid."""
    generator = P.PelvisPhantoms(0)
    grid = generator.grid(0, shape=(32, 28, 12))
    truth, other = generator.subject(0, grid), generator.subject(1, grid)
    spacing = tuple(np.linalg.norm(truth.affine[:3, :3], axis=0))
    return truth, other, spacing


def assert_segmentation_matches(prediction, truth, spacing):
    result = M.segmentation_metrics(prediction, truth, spacing=spacing)
    classes = [c for c in range(1, int(truth.max()) + 1) if (truth == c).any()
               and (prediction == c).any()]
    assert classes
    for c in classes:
        assert result[f"dice_{c}"] == pytest.approx(reference_dice(prediction, truth, c),
                                                    rel=REL)
        assert result[f"hd95_{c}"] == pytest.approx(
            reference_surface_hausdorff(prediction == c, truth == c, spacing), abs=HD_MM)
        assert_distances_match(prediction == c, truth == c, spacing)


def assert_distances_match(prediction, truth, spacing):
    assert M.hausdorff_distance(prediction, truth, spacing) == pytest.approx(
        reference_hausdorff(prediction, truth, spacing), abs=HD_MM)
    for percentile in (95.0, 100.0):
        assert M.surface_hausdorff_distance(prediction, truth, spacing, percentile) == \
            pytest.approx(reference_surface_hausdorff(prediction, truth, spacing, percentile),
                          abs=HD_MM)


# ---- random volumes ----

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmentation_metrics_match_simpleitk_on_random_anisotropic_volumes(seed):
    prediction, truth = random_labels(seed, (30, 26, 12))
    assert_segmentation_matches(prediction, truth, SPACING)
    # A filled blob against a shell with holes, where the Hausdorff conventions part.
    assert_distances_match(prediction >= 1, truth == 1, SPACING)


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_and_ssim_match_scikit_image_on_random_volumes(seed):
    prediction, truth = random_images(seed, (30, 26, 14))
    data_range = truth.max() - truth.min()
    result = M.regression_metrics(prediction, truth)
    assert result["psnr"] == pytest.approx(skimage_metrics.peak_signal_noise_ratio(
        truth, prediction, data_range=data_range), rel=REL)
    assert result["ssim"] == pytest.approx(reference_ssim(prediction, truth, data_range),
                                           rel=REL)


def test_masked_ssim_is_the_mean_of_scikit_images_map_inside_the_mask():
    prediction, truth = random_images(3, (24, 22, 16))
    mask = np.zeros(truth.shape, bool)
    mask[2:20, 5:22, 4:16] = True              # crosses the border strip on several sides
    data_range = truth[mask].max() - truth[mask].min()
    assert M.ssim(prediction, truth, mask) == pytest.approx(
        reference_ssim(prediction, truth, data_range, mask), rel=REL)


def test_hausdorff_conventions_part_on_a_structure_with_a_hole():
    # SimpleITK's Hausdorff distance is between voxel sets: the hole is one voxel (0.8 mm)
    # from the holed cube. The surface one: the hole's wall is 5 voxels (4 mm along x)
    # from the outer surface.
    solid = np.zeros((15, 15, 15), bool)
    solid[2:13, 2:13, 2:13] = True
    holed = solid.copy()
    holed[7, 7, 7] = False
    assert M.hausdorff_distance(holed, solid, SPACING) == pytest.approx(
        reference_hausdorff(holed, solid, SPACING), abs=HD_MM)
    assert M.hausdorff_distance(holed, solid, SPACING) == pytest.approx(0.8)
    assert M.surface_hausdorff_distance(holed, solid, SPACING, 100) == pytest.approx(
        reference_surface_hausdorff(holed, solid, SPACING, 100), abs=HD_MM)
    assert M.surface_hausdorff_distance(holed, solid, SPACING, 100) == pytest.approx(4.0)


# ---- 2D images stored as one-slice volumes ----

@pytest.mark.parametrize("seed", [0, 1])
def test_one_slice_volumes_match_the_references_in_2d(seed):
    prediction, truth = random_labels(seed, (40, 36))
    assert_segmentation_matches(prediction[..., None], truth[..., None], SPACING)
    assert_distances_match(prediction[..., None] >= 1, truth[..., None] == 1, SPACING)
    for c in (1, 2):        # SimpleITK on the 2D images gives the same distances
        p, t = prediction == c, truth == c
        assert M.surface_hausdorff_distance(p[..., None], t[..., None], SPACING) == \
            pytest.approx(reference_surface_hausdorff(p, t, SPACING[:2]), abs=HD_MM)
    image_prediction, image_truth = random_images(seed, (40, 36))
    data_range = image_truth.max() - image_truth.min()
    assert M.ssim(image_prediction[..., None], image_truth[..., None]) == pytest.approx(
        reference_ssim(image_prediction, image_truth, data_range), rel=REL)


# ---- volumes thinner than the window ----

def test_an_axis_shorter_than_the_window_gets_the_largest_odd_window_that_fits():
    # (5, 6, 5): a 5x5x5 window, scikit-image's win_size=5.
    prediction, truth = random_images(4, (5, 6, 5))
    data_range = truth.max() - truth.min()
    assert M.ssim(prediction, truth) == pytest.approx(
        reference_ssim(prediction, truth, data_range, win_size=5), rel=REL)


def test_a_two_slice_volume_is_the_mean_of_its_slices_2d_ssim():
    prediction, truth = random_images(5, (20, 18, 2))
    data_range = truth.max() - truth.min()
    per_slice = [reference_ssim(prediction[..., z], truth[..., z], data_range) for z in (0, 1)]
    assert M.ssim(prediction, truth) == pytest.approx(np.mean(per_slice), rel=REL)


def test_ssim_is_nan_when_every_axis_is_shorter_than_three_voxels():
    prediction, truth = random_images(6, (2, 2, 1))
    assert math.isnan(M.ssim(prediction, truth))
    with pytest.raises(ValueError, match=r"`win_size`.*odd integer >= 3.*win_size=4"):
        M.ssim_map(prediction, truth, 1.0, win_size=4)


# ---- phantoms ----

def test_segmentation_metrics_match_simpleitk_on_phantoms(phantom_pair):
    truth, other, spacing = phantom_pair
    assert_segmentation_matches(other.seg, truth.seg, spacing)


def test_psnr_and_ssim_match_scikit_image_on_a_phantom_ct_with_and_without_body_mask(
        phantom_pair):
    truth_phantom, _, _ = phantom_pair
    truth = truth_phantom.ct.astype(np.float64)
    prediction = ndimage.gaussian_filter(truth, 0.8) + np.random.default_rng(7).normal(
        0, 20.0, truth.shape)
    data_range = truth.max() - truth.min()
    whole = M.regression_metrics(prediction, truth)
    assert whole["psnr"] == pytest.approx(skimage_metrics.peak_signal_noise_ratio(
        truth, prediction, data_range=data_range), rel=REL)
    assert whole["ssim"] == pytest.approx(reference_ssim(prediction, truth, data_range),
                                          rel=REL)
    body = truth_phantom.body > 0
    inside_range = truth[body].max() - truth[body].min()
    masked = M.regression_metrics(prediction, truth, mask=body)
    assert masked["psnr"] == pytest.approx(skimage_metrics.peak_signal_noise_ratio(
        truth[body], prediction[body], data_range=inside_range), rel=REL)
    assert masked["ssim"] == pytest.approx(
        reference_ssim(prediction, truth, inside_range, body), rel=REL)


# ---- scikit-image stays a test-only reference ----

def test_sfg_app_does_not_import_scikit_image():
    import sfg_app
    for path in pathlib.Path(sfg_app.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert "skimage" not in {n.split(".")[0] for n in names}, path
