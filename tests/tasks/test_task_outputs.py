"""A task's collaborators: its outputs (what inference blends, writes and reads back) and
its scoring, each usable alone, as a plugin task type reuses them."""

import numpy as np
import pytest

from sfg_app.evaluation.metrics import regression_metrics, segmentation_metrics
from sfg_app.tasks.classification import ClassificationTask
from sfg_app.tasks.outputs import ClassOutputs, ValueOutputs
from sfg_app.tasks.regression import RegressionTask
from sfg_app.tasks.scoring import RegressionScoring, SegmentationScoring
from sfg_app.tasks.segmentation import SegmentationTask


def recording_undo(calls: list):
    """An `undo(volume, order)` that records the spline orders it is asked for."""
    def undo(volume, order):
        calls.append(order)
        return volume
    return undo


def test_each_task_type_holds_its_outputs_and_scoring():
    seg = SegmentationTask("organs", "LABEL", num_classes=4, save_probabilities=True,
                           output_interp_order=3)
    ct = RegressionTask("ct", "CT", output_interp_order=0)
    sex = ClassificationTask("sex", "SEX", num_classes=2)
    assert isinstance(seg.outputs, ClassOutputs) and seg.outputs.interp_order == 3
    assert seg.outputs.save_probabilities and seg.scoring.num_classes == 4
    assert type(ct.outputs) is ValueOutputs and ct.outputs.interp_order == 0
    assert isinstance(ct.scoring, RegressionScoring)
    assert sex.outputs.inferred_output == "probabilities" == seg.outputs.inferred_output
    assert ct.outputs.inferred_output == "values"


@pytest.mark.parametrize("save, resampled, order, variance, blended", [
    (False, False, 1, False, "labels"),
    (False, True, 0, False, "labels"),
    (False, True, 1, False, "probabilities"),
    (True, False, 1, False, "probabilities"),
    (False, False, 1, True, "probabilities"),
])
def test_class_outputs_blend_labels_unless_the_probabilities_are_needed(
        save, resampled, order, variance, blended):
    outputs = ClassOutputs("organs", order, save_probabilities=save)
    assert outputs.blended_output(resampled=resampled, with_variance=variance) == blended
    assert ValueOutputs("ct", order).blended_output(
        resampled=resampled, with_variance=variance) == "values"


def test_kinds_of_file_per_subject():
    assert ValueOutputs("ct").kinds(with_variance=False) == ("",)
    assert ValueOutputs("ct").kinds(with_variance=True) == ("", "var")
    assert ClassOutputs("organs", save_probabilities=True).kinds(True) == ("", "prob", "var")
    assert ClassOutputs("organs").kinds(False) == ("",)


def test_volumes_are_taken_back_with_the_tasks_interpolation_order():
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), (4, 5, 2)).astype(np.float32)
    calls = []
    volumes = ClassOutputs("organs", 3, save_probabilities=True).volumes(
        probabilities, "probabilities", recording_undo(calls))
    assert calls == [3]
    np.testing.assert_array_equal(volumes[""][0][..., 0], probabilities.argmax(-1))
    assert volumes[""][0].dtype == np.int32 and volumes["prob"][1] == np.float32
    calls.clear()
    labels = probabilities.argmax(-1)[..., None]
    assert ClassOutputs("organs", 3).volumes(labels, "labels", recording_undo(calls)) == {
        "": (labels, None)} and calls == [0]
    calls.clear()
    values = ValueOutputs("ct", 2).volumes(probabilities, "values", recording_undo(calls))
    assert calls == [2] and values[""][1] == np.float32
    summed = ClassOutputs("organs").variance_volume(probabilities)
    np.testing.assert_allclose(summed[..., 0], probabilities.sum(-1))


def test_table_rows_read_back_what_was_written():
    probabilities = np.array([0.2, 0.7, 0.1])
    names, values = ClassOutputs("grade").table_columns(probabilities)
    assert names == ["grade_0", "grade_1", "grade_2", "label"] and values[-1] == 1
    row = dict(zip(["subject_id"] + names, ["s"] + [f"{v:.6g}" for v in values]))
    np.testing.assert_array_equal(ClassOutputs("grade").prediction_from_row(row), [1.0])
    names, values = ValueOutputs("age").table_columns(np.array([41.5]))
    row = {"subject_id": "s", "age_0": f"{values[0]:.6g}", "age_0_var": "2.5"}
    np.testing.assert_array_equal(ValueOutputs("age").prediction_from_row(row), [41.5])


def test_scoring_is_the_metrics_of_the_task_type():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, (6, 5, 4, 1))
    prediction = np.where(rng.random(truth.shape) > 0.2, truth, 0)
    assert SegmentationScoring(3).score(prediction, truth, spacing=(1.0, 1.0, 2.0)) == \
        segmentation_metrics(prediction, truth, spacing=(1.0, 1.0, 2.0), num_classes=3)
    values = rng.normal(size=(6, 5, 4, 1))
    assert RegressionScoring().score(values + 0.1, values) == \
        regression_metrics(values + 0.1, values)
