"""`TaskAgreement` and `FilterGrouping` with `allocation = agreement`: the groups decided
from how the tasks' gradients on each kernel's weights agree."""

import numpy as np
import pytest
from keras import ops

from sfg_app.errors import ConfigError
from sfg_app.layers.grouping import FilterGrouping, GroupingConfig
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import SFGHighRes3DNet


def _grouping(filters=6, tasks=2, threshold=0.3, split="pull"):
    grouping = FilterGrouping(filters, tasks + 1, GroupingConfig(
        allocation="agreement", warmup_iter=3, agreement_threshold=threshold,
        agreement_split=split, init="uniform", prior="uniform", fixed_from=3))
    grouping.build()
    return grouping


def test_agreement_needs_a_warm_up_to_measure_it():
    with pytest.raises(ConfigError, match=r"`allocation`\. Expected learned, or agreement "
                                          r"with warmup_iter above 0"):
        GroupingConfig(allocation="agreement", warmup_iter=0)


def test_moving_averages_of_energy_and_dot_products_per_kernel():
    grouping = _grouping(filters=2)
    first = [np.array([[1.0, 0.0], [1.0, 2.0]]), np.array([[3.0, 1.0]])]  # 3 inputs x 2
    second = [np.array([[1.0, 0.0], [-1.0, 1.0]]), np.array([[1.0, -1.0]])]
    grouping.measure.record([first, second], decay=0.5)
    energy = ops.convert_to_numpy(grouping.measure.task_energy)
    dots = ops.convert_to_numpy(grouping.measure.task_dots)
    np.testing.assert_allclose(energy, 0.5 * np.array([[11.0, 3.0], [5.0, 2.0]]))
    np.testing.assert_allclose(dots[:, 0], 0.5 * np.array([3.0, 1.0]))
    np.testing.assert_allclose(grouping.measure.cosines(), [3 / np.sqrt(33), 1 / np.sqrt(10)],
                               rtol=1e-6)


def test_agreeing_kernels_are_shared_the_others_go_to_the_task_pulling_hardest():
    grouping = _grouping(filters=5)
    grouping.measure.task_energy.assign(np.array([[4, 1], [4, 1], [1, 9], [5, 5], [2, 1.0]]))
    grouping.measure.task_dots.assign(np.array([[1.0], [-1.0], [0.0], [4.0], [0.2]]))
    # cosines 0.5, -0.5, 0, 0.8, 0.14: kernels 0 and 3 shared (above 0.3)
    groups = grouping.allocate()
    np.testing.assert_array_equal(groups, [2, 0, 1, 2, 0])
    np.testing.assert_array_equal(
        np.argmax(ops.convert_to_numpy(grouping.masks("map")), axis=-1), groups)
    probabilities = ops.convert_to_numpy(grouping.probabilities())
    np.testing.assert_allclose(probabilities.max(axis=-1), 0.98, rtol=1e-5)


def test_a_task_left_without_kernels_gets_the_one_it_pulls_hardest():
    grouping = _grouping(filters=4)
    grouping.measure.task_energy.assign(np.array([[9, 1], [8, 3], [7, 2], [6, 1.0]]))
    grouping.measure.task_dots.assign(np.zeros((4, 1)))
    groups = grouping.allocate()
    np.testing.assert_array_equal(groups, [0, 1, 0, 0])  # task 1's largest share: kernel 1


def test_training_masks_are_shared_until_decided_then_the_decided_ones():
    grouping = _grouping(filters=3)
    shared = ops.convert_to_numpy(grouping.masks("train", temperature=1.0, fixed=0.0))
    np.testing.assert_array_equal(shared, [[0, 0, 1]] * 3)
    grouping.measure.task_energy.assign(np.array([[1, 0.1], [0.1, 1], [1, 1.0]]))
    grouping.measure.task_dots.assign(np.array([[0.0], [0.0], [0.9]]))
    grouping.allocate()
    decided = ops.convert_to_numpy(grouping.masks("train", temperature=1.0, fixed=1.0))
    np.testing.assert_array_equal(decided, [[1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_the_decided_architecture_is_reached_over_transition_iter_steps():
    at_once = GroupingConfig(allocation="agreement", warmup_iter=3, fixed_from=3)
    assert [float(at_once.is_fixed(step)) for step in (2, 3, 9)] == [0.0, 1.0, 1.0]
    ramp = GroupingConfig(allocation="agreement", warmup_iter=3, fixed_from=3,
                          transition_iter=4)
    np.testing.assert_allclose([float(ramp.is_fixed(step)) for step in (0, 2, 3, 4, 6, 7, 50)],
                               [0, 0, 0.25, 0.5, 1, 1, 1])
    grouping = _grouping(filters=3)
    grouping.measure.task_energy.assign(np.array([[1, 0.1], [0.1, 1], [1, 1.0]]))
    grouping.measure.task_dots.assign(np.array([[0.0], [0.0], [0.9]]))
    grouping.allocate()
    halfway = ops.convert_to_numpy(grouping.masks("train", temperature=1.0, fixed=0.25))
    # A kernel leaving the shared group still feeds the other task, a quarter less.
    np.testing.assert_allclose(halfway, [[0.25, 0, 0.75], [0, 0.25, 0.75], [0, 0, 1]])


def test_an_even_split_gives_each_task_as_many_kernels_by_its_own_energy_share():
    grouping = _grouping(filters=6)
    # Task 1's loss pulls 100 times harder everywhere: `pull` gives it every kernel but
    # the one task 0 must keep.
    energy = np.array([[4, 100], [3, 300], [2, 200], [1, 400], [0.5, 900], [1, 100.0]])
    grouping.measure.task_energy.assign(energy)
    grouping.measure.task_dots.assign(np.zeros((6, 1)))
    assert grouping.measure.decide(0.3, "pull").tolist() == [0, 1, 1, 1, 1, 1]
    # Own shares: task 0 relies most on kernels 0, 1, 2; task 1 on 4, 3, then 2 (taken).
    assert grouping.measure.decide(0.3, "even").tolist() == [0, 0, 0, 1, 1, 1]
    grouping.measure.task_dots.assign(np.array([[0.0], [0], [0], [0], [0], [300.0]]))
    # Kernel 5 agrees (cosine 0.95): shared; five left, the first task gets the extra one.
    assert grouping.measure.decide(0.3, "even").tolist() == [0, 0, 0, 1, 1, 2]


def test_a_network_reports_the_cosines_that_decided_its_groups():
    model = SFGHighRes3DNet({"a": HeadSpec("voxel", 1), "b": HeadSpec("voxel", 1)},
                            layer_scale=0.25, grouping=GroupingConfig(
                                allocation="agreement", warmup_iter=3, fixed_from=3))
    model.build((None, 8, 8, 1))
    first = model.groupings[0]
    first.measure.task_energy.assign(np.ones((first.filters, 2)))
    first.measure.task_dots.assign(np.full((first.filters, 1), 0.5))
    cosines = model.grouping_agreement()
    assert list(cosines) == [g.name for g in model.groupings]
    np.testing.assert_allclose(cosines[first.name], 0.5)
