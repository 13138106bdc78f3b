"""Task types: argument checks, target encoding, masking, metrics and decoding."""

import ast
import pathlib

import numpy as np
import pytest
from keras import ops

import sfg_app.tasks
from sfg_app.errors import ConfigError
from sfg_app.registry import TASKS
from sfg_app.tasks import losses
from sfg_app.tasks.classification import ClassificationTask
from sfg_app.tasks.regression import RegressionTask
from sfg_app.tasks.segmentation import SegmentationTask
from task_helpers import value_and_gradients


def as_numpy(x):
    return ops.convert_to_numpy(x)


def test_no_module_of_tasks_imports_tensorflow():
    folder = pathlib.Path(sfg_app.tasks.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "tensorflow" for n in names), path


def test_registered_task_types_have_their_heads():
    seg = TASKS.get("segmentation")("organs", "LABEL", num_classes=5)
    ct = TASKS.get("regression")("ct", "CT")
    age = TASKS.get("regression")("age", "AGE", head_kind="image")
    sex = TASKS.get("classification")("sex", "SEX", num_classes=2)
    assert (seg.head_kind, seg.head_channels, seg.loss_name) == ("voxel", 5, "dice_ce")
    assert (ct.head_kind, ct.head_channels, ct.loss_name) == ("voxel", 1, "l1")
    assert (age.head_kind, age.head_channels) == ("image", 1)
    assert (sex.head_kind, sex.head_channels, sex.loss_name) == ("image", 2, "ce")
    assert seg.output_interp_order == 1 and not seg.save_probabilities
    assert seg.weight == 1.0 and seg.mask is None and seg.target == "LABEL"


@pytest.mark.parametrize("cls, kwargs, message", [
    (SegmentationTask, {"num_classes": 1},
     r"`num_classes` of task 'organs'.*>= 2.*num_classes=1"),
    (SegmentationTask, {"num_classes": 3, "loss": "l1"},
     r"`loss` of task 'organs'.*segmentation task: dice_ce, ce, dice, generalised_dice.*loss='l1'"),
    (SegmentationTask, {"num_classes": 3, "loss": "dcie"},
     r"Unknown loss 'dcie'.*Did you mean 'dice'"),
    (SegmentationTask, {"num_classes": 3, "weight": -1.0}, r"`weight`.*>= 0.*weight=-1.0"),
    (SegmentationTask, {"num_classes": 3, "output_interp_order": 7},
     r"`output_interp_order`.*0.*5"),
    (SegmentationTask, {"num_classes": 3, "optional_target": "yes"},
     r"`optional_target`.*true or false"),
    (SegmentationTask, {"num_classes": 3, "mask": ""}, r"`mask`.*input section"),
    (RegressionTask, {"target_scale": 0.0}, r"`target_scale`.*> 0.*target_scale=0.0"),
    (RegressionTask, {"out_channels": 2, "target_shift": [1.0, 2.0, 3.0]},
     r"`target_shift`.*2 numbers.*target_shift=\[1.0, 2.0, 3.0\]"),
    (RegressionTask, {"out_channels": 0}, r"`out_channels`.*>= 1"),
    (RegressionTask, {"huber_delta": float("nan"), "loss": "huber"}, r"`huber_delta`.*> 0"),
    (RegressionTask, {"head_kind": "pixel"}, r"`head_kind`.*voxel, image"),
    (RegressionTask, {"head_kind": "image", "mask": "BODY"}, r"`mask`.*image-level"),
    (ClassificationTask, {"num_classes": 2, "loss": "dice"}, r"classification task: ce\b"),
])
def test_invalid_arguments_are_named_in_the_error(cls, kwargs, message):
    name = "organs" if cls is SegmentationTask else "t"
    with pytest.raises(ConfigError, match=message.replace("'organs'", f"'{name}'")):
        cls(name, "TARGET", **kwargs)


def test_segmentation_loss_is_the_registered_loss_on_one_hot_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 5, 4, 3, 1)).astype("float32")
    logits = rng.normal(size=(2, 5, 4, 3, 3)).astype("float32")
    one_hot = np.eye(3, dtype="float32")[labels[..., 0].astype(int)]
    weights = np.ones(labels.shape[:-1], "float32")
    for loss in SegmentationTask.loss_names:
        task = SegmentationTask("organs", "LABEL", num_classes=3, loss=loss)
        expected = getattr(losses, {"ce": "cross_entropy", "dice_ce": "dice_cross_entropy"}
                           .get(loss, loss))(one_hot, logits, weights)
        assert float(as_numpy(task.loss(labels, logits))) == pytest.approx(
            float(as_numpy(expected)), rel=1e-6)


def test_out_of_range_and_nan_labels_count_like_masked_voxels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (2, 6, 6, 1)).astype("float32")
    logits = rng.normal(size=(2, 6, 6, 4)).astype("float32")
    ignored = rng.random((2, 6, 6, 1)) > 0.6
    mask = (~ignored).astype("float32")
    odd = labels.copy()
    odd[ignored] = rng.choice([-1.0, 4.0, 255.0, np.nan], ignored.sum())
    task = SegmentationTask("organs", "LABEL", num_classes=4, loss="dice_ce")
    assert float(as_numpy(task.loss(odd, logits))) == pytest.approx(
        float(as_numpy(task.loss(labels, logits, mask=mask))), rel=1e-6)


def test_mask_and_availability_zero_the_gradient_where_nothing_counts():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (3, 6, 5, 4, 1)).astype("float32")
    logits = rng.normal(size=(3, 6, 5, 4, 3)).astype("float32")
    mask = (rng.random((3, 6, 5, 4, 1)) > 0.5).astype("float32") * 0.9  # interpolated mask
    available = np.array([1.0, 0.0, 1.0], "float32")
    task = SegmentationTask("organs", "LABEL", num_classes=3, loss="generalised_dice")
    value, (grad,) = value_and_gradients(lambda p: task.loss(labels, p, mask, available), logits)
    assert np.all(grad[1] == 0.0)
    assert np.all(grad[mask[..., 0] == 0] == 0.0)
    # The unavailable example removed from the batch gives the same loss.
    keep = [0, 2]
    alone = task.loss(labels[keep], logits[keep], mask[keep])
    assert float(value) == pytest.approx(float(as_numpy(alone)), rel=1e-6)


def test_all_unavailable_batch_gives_zero_loss_and_zero_gradient_for_every_task():
    rng = np.random.default_rng(3)
    cases = [
        (SegmentationTask("s", "L", num_classes=3), rng.integers(0, 3, (2, 4, 4, 1)), (2, 4, 4, 3)),
        (RegressionTask("r", "C", loss="l2"), rng.normal(size=(2, 4, 4, 4, 1)), (2, 4, 4, 4, 1)),
        (ClassificationTask("c", "S", num_classes=2), np.array([0.0, 1.0]), (2, 2)),
    ]
    for task, target, out_shape in cases:
        out = rng.normal(size=out_shape).astype("float32")
        none = np.zeros(2, "float32")
        value, (grad,) = value_and_gradients(
            lambda p: task.loss(target.astype("float32"), p, available=none), out)
        assert float(value) == 0.0 and np.all(grad == 0.0)


def test_segmentation_dice_metric_on_a_hand_computed_batch():
    # Labels of 4 voxels: 0 1 1 2; prediction 0 1 2 2. Class 1: 2*1/(1+2) = 2/3;
    # class 2: 2*1/(2+1) = 2/3; class 3 absent from both (skipped).
    labels = np.array([0, 1, 1, 2], "float32").reshape(1, 4, 1, 1)
    logits = np.eye(4, dtype="float32")[[0, 1, 2, 2]].reshape(1, 4, 1, 4) * 5
    task = SegmentationTask("organs", "LABEL", num_classes=4)
    assert float(as_numpy(task.metrics(labels, logits)["dice"])) == pytest.approx(2 / 3)
    mask = np.array([1, 1, 0, 1], "float32").reshape(1, 4, 1, 1)  # drop the 1 -> 2 error
    assert float(as_numpy(task.metrics(labels, logits, mask)["dice"])) == pytest.approx(1.0)
    background = np.zeros((1, 4, 1, 1), "float32")
    bg_logits = np.eye(4, dtype="float32")[[0, 0, 0, 0]].reshape(1, 4, 1, 4)
    assert float(as_numpy(task.metrics(background, bg_logits)["dice"])) == 1.0


def test_segmentation_decode_gives_probabilities_and_labels_channels_last():
    logits = np.random.default_rng(4).normal(size=(2, 5, 4, 3, 3)).astype("float16")
    decoded = SegmentationTask("organs", "LABEL", num_classes=3).decode(logits)
    probabilities, labels = as_numpy(decoded["probabilities"]), as_numpy(decoded["labels"])
    assert probabilities.dtype == np.float32 and labels.dtype == np.int32
    assert probabilities.shape == (2, 5, 4, 3, 3) and labels.shape == (2, 5, 4, 3, 1)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(labels[..., 0], logits.argmax(-1))


def test_regression_learns_shifted_and_scaled_values_and_decodes_to_target_units():
    rng = np.random.default_rng(5)
    ct = rng.normal(-400.0, 500.0, (2, 6, 6, 1)).astype("float32")
    task = RegressionTask("ct", "CT", target_shift=-1000.0, target_scale=1000.0, loss="l2")
    normalised = (ct + 1000.0) / 1000.0
    assert float(as_numpy(task.loss(ct, normalised))) == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(as_numpy(task.decode(normalised)["values"]), ct, rtol=1e-5)
    off_by = normalised + np.where(rng.random(ct.shape) > 0.5, 0.05, -0.05).astype("float32")
    mae = task.metrics(ct, off_by)["mae"]
    assert float(as_numpy(mae)) == pytest.approx(50.0, rel=1e-4)  # 0.05 * 1000 HU
    assert float(as_numpy(task.loss(ct, off_by))) == pytest.approx(0.0025, rel=1e-4)


def test_regression_huber_delta_is_in_the_networks_units():
    rng = np.random.default_rng(6)
    ct = rng.normal(0.0, 300.0, (2, 5, 5, 1)).astype("float32")
    out = rng.normal(size=(2, 5, 5, 1)).astype("float32")
    weights = np.ones((2, 5, 5), "float32")
    task = RegressionTask("ct", "CT", target_scale=1000.0, loss="huber", huber_delta=0.1)
    direct = losses.huber(ct / 1000.0, out, weights, delta=0.1)       # 100 HU
    assert float(as_numpy(task.loss(ct, out))) == pytest.approx(float(as_numpy(direct)), rel=1e-6)
    default = RegressionTask("ct", "CT", target_scale=1000.0, loss="huber")
    unit = losses.huber(ct / 1000.0, out, weights, delta=1.0)
    assert float(as_numpy(default.loss(ct, out))) == pytest.approx(float(as_numpy(unit)), rel=1e-6)
    assert float(as_numpy(default.loss(ct, out))) != pytest.approx(float(as_numpy(direct)))


def test_regression_per_channel_scale_non_finite_targets_and_image_level_values():
    rng = np.random.default_rng(7)
    task = RegressionTask("flow", "FLOW", out_channels=2, target_shift=[0.0, 10.0],
                          target_scale=[2.0, 4.0])
    target = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    out = rng.normal(size=(1, 4, 4, 2)).astype("float32")
    values = as_numpy(task.decode(out)["values"])
    np.testing.assert_allclose(values, out * [2.0, 4.0] + [0.0, 10.0], rtol=1e-6)
    broken = target.copy()
    broken[0, 0, 0, 1] = np.inf
    mask = np.ones((1, 4, 4, 1), "float32")
    mask[0, 0, 0] = 0
    assert float(as_numpy(task.loss(broken, out))) == pytest.approx(
        float(as_numpy(task.loss(target, out, mask))), rel=1e-6)

    age = RegressionTask("age", "AGE", head_kind="image", target_shift=50.0, target_scale=20.0)
    years = np.array([30.0, 70.0, 55.0], "float32")
    predicted = np.array([[-1.0], [1.5], [0.0]], "float32")  # 30, 80, 50 years
    available = np.array([1.0, 1.0, 0.0], "float32")
    assert float(as_numpy(age.metrics(years, predicted, available=available)["mae"])) == \
        pytest.approx(5.0)


def test_classification_accuracy_and_decode():
    task = ClassificationTask("sex", "SEX", num_classes=2)
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]], "float32")
    truth = np.array([[0.0], [1.0], [1.0], [1.0]], "float32")
    assert float(as_numpy(task.metrics(truth, logits)["accuracy"])) == pytest.approx(0.75)
    available = np.array([1.0, 1.0, 0.0, 1.0], "float32")
    assert float(as_numpy(task.metrics(truth, logits, available=available)["accuracy"])) == 1.0
    decoded = task.decode(logits)
    np.testing.assert_array_equal(as_numpy(decoded["labels"])[:, 0], [0, 1, 0, 1])
    assert as_numpy(decoded["probabilities"]).shape == (4, 2)


SEG = SegmentationTask("organs", "L", num_classes=3)


@pytest.mark.parametrize("task, out_shape, target_shape, message", [
    (SEG, (2, 4, 4), (2, 4, 4), r"'organs'.*\(B, \*spatial, n\)"),
    (SEG, (2, 4, 4, 2), (2, 4, 4, 1), r"n=3.*\(2, 4, 4, 2\)"),
    (SEG, (2, 4, 4, 3), (2, 4, 4, 3), r"one channel"),
    (SEG, (2, 4, 4, 3), (2, 4, 4), r"rank of the output"),
    (ClassificationTask("sex", "S", num_classes=2), (2, 4, 4, 2), (2, 1), r"'sex'.*\(B, n\)"),
    (RegressionTask("ct", "C"), (2, 4, 4, 1), (2, 4, 4, 2), r"out_channels=1"),
])
def test_shapes_that_break_the_contract_are_reported(task, out_shape, target_shape, message):
    with pytest.raises(ValueError, match=message):
        task.loss(np.zeros(target_shape, "float32"), np.zeros(out_shape, "float32"))
