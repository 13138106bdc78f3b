"""Compact export for one task: the same map output from fewer kernels."""

import keras
import numpy as np
import pytest
from keras import ops

from sfg_app.layers.grouping import GroupingConfig
from sfg_app.networks.compact import CompactNetwork, compact_network, multiply_adds
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import SFGHighRes3DNet
from sfg_app.networks.stages import HIGHRES_STAGES, StageSpec
from sfg_app.networks.vgg import SFGVGG

TOLERANCE = 1e-5


def inputs(rank, size=10, channels=1, batch=2, seed=0):
    shape = (batch,) + (size,) * rank + (channels,)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def scramble(model, seed=1, scale=4.0):
    """Non-trivial map groups: random logits on every SFG layer, kernel g < G put in
    group g, so that every group has a kernel in every layer."""
    rng = np.random.default_rng(seed)
    for grouping in model.groupings:
        logits = scale * rng.normal(size=(grouping.filters, grouping.num_groups))
        for group in range(grouping.num_groups):
            logits[group, group] = 100.0
        grouping.assign_logits(logits)


def map_outputs(model, x):
    model.set_architecture("map")
    return {t: ops.convert_to_numpy(v) for t, v in model(x, training=False).items()}


def check_equal(model, x, task):
    export = compact_network(model, task)
    full = map_outputs(model, x)[task]
    compact = export.model(x, training=False)
    assert list(compact) == [task]
    difference = np.abs(ops.convert_to_numpy(compact[task]) - full).max()
    assert difference < TOLERANCE, difference
    return export


def highres(tasks=2, **options):
    kinds = ("voxel", "image", "voxel")
    heads = {f"task{t}": HeadSpec(kinds[t], t + 2) for t in range(tasks)}
    options.setdefault("layer_scale", 0.25)
    return SFGHighRes3DNet(heads, seed=0, **options)


def test_3d_highres_two_tasks_instance_norm():
    model = highres(2, norm_layer="instance")
    x = inputs(3, size=8)
    model(x)
    scramble(model)
    for task in model.task_names:
        export = check_equal(model, x, task)
        assert export.flops_compact < export.flops_full
        assert export.params_compact < export.params_full
        for name, kept in export.kept.items():
            assert 0 < len(kept) <= export.kernels_full[name]
            assert np.all(np.diff(kept) > 0)


def test_2d_highres_three_tasks_batch_norm_uses_the_moving_statistics():
    model = highres(3, norm_layer="batch", activation="prelu")
    x = inputs(2, size=12, channels=2)
    model(x)
    scramble(model, seed=3)
    for seed in range(3):  # training-mode calls move the moving statistics
        model(inputs(2, size=12, channels=2, seed=10 + seed) * 2 + 1, training=True)
    moving = ops.convert_to_numpy(model.stages[0].block.norm.moving_mean)
    assert np.abs(moving).max() > 1e-3
    for task in model.task_names:
        check_equal(model, x, task)


def test_vgg_image_heads_with_pooling():
    model = SFGVGG({"age": HeadSpec("image", 1), "gender": HeadSpec("image", 2)},
                   layer_scale=1 / 16, seed=0, norm_layer="batch")
    x = inputs(2, size=16, channels=3)
    model(x, training=True)
    scramble(model, seed=5)
    for task in model.task_names:
        export = check_equal(model, x, task)
        assert export.flops_compact < export.flops_full
        assert tuple(export.model(x)[task].shape) == (2, model.head_specs[task].channels)


@pytest.mark.parametrize("connectivity", ["separate", "dense"])
def test_separate_and_dense_connectivity_with_shared_norm_parameters(connectivity):
    model = highres(2, norm_layer="batch", grouping=GroupingConfig(
        connectivity=connectivity, norm_parameters="shared"))
    x = inputs(3, size=8)
    model(x, training=True)
    scramble(model, seed=7)
    assert tuple(model.stages[0].block.norm.gamma.shape)[0] == 1
    for task in model.task_names:
        export = check_equal(model, x, task)
        kept = {name: len(k) for name, k in export.kept.items()}
        if connectivity == "dense":  # every kernel reaches every head
            assert kept == export.kernels_full
        else:  # only the task's and the shared group's kernels
            for grouping in model.groupings:
                groups = ops.convert_to_numpy(grouping.masks("map")).argmax(-1)
                index = model.task_names.index(task)
                assert kept[grouping.name] == np.isin(groups, [index, 2]).sum()


def test_mixed_connectivity_keeps_the_task_and_shared_groups():
    model = highres(2)
    x = inputs(3, size=8)
    model(x)
    scramble(model, seed=2)
    export = compact_network(model, "task1")
    for grouping in model.groupings:
        groups = ops.convert_to_numpy(grouping.masks("map")).argmax(-1)
        np.testing.assert_array_equal(export.kept[grouping.name],
                                      np.flatnonzero(np.isin(groups, [1, 2])))


def test_save_and_load_round_trip(tmp_path):
    model = highres(2, norm_layer="batch")
    x = inputs(2, size=12)
    model(x, training=True)
    scramble(model)
    export = compact_network(model, "task0")
    before = ops.convert_to_numpy(export.model(x)["task0"])
    path = tmp_path / "task0.keras"
    export.model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is CompactNetwork
    assert restored.get_config() == export.model.get_config()
    assert restored.widths == [len(k) for k in export.kept.values()]
    np.testing.assert_array_equal(ops.convert_to_numpy(restored(x)["task0"]), before)


def test_a_layer_without_kept_kernels_is_an_error():
    model = highres(2)
    x = inputs(3, size=8)
    model(x)
    scramble(model)
    last = model.groupings[-1]
    logits = np.full((last.filters, 3), -5.0, np.float32)
    logits[:, 1] = 5.0  # every kernel of the last layer is task1's specialist
    last.assign_logits(logits)
    with pytest.raises(ValueError, match=r"sfg_4.*task0"):
        compact_network(model, "task0")
    check_equal(model, x, "task1")
    with pytest.raises(ValueError, match="task"):
        compact_network(model, "nope")


def test_multiply_adds_count_every_convolution_and_the_heads():
    # HighRes3DNet 16/32/64/64/64, 3 residual units in each of the first 3 stages, 3D.
    flops = multiply_adds(HIGHRES_STAGES, [16, 32, 64, 64, 64], 1, 3, [1])
    convs = [(1, 16, 6 * 16 * 16), (16, 32, 6 * 32 * 32), (32, 64, 6 * 64 * 64),
             (64, 64, 0), (64, 64, 0)]
    assert flops == sum(27 * (a * b + r) for a, b, r in convs) + 64
    # One pooling before a layer divides its cost by 2**rank.
    plan = (StageSpec(4, pool=True), StageSpec(4))
    assert multiply_adds(plan, [4, 4], 1, 2, [1]) == 9 * 4 + 9 * 16 / 4 + 4 / 4


@pytest.mark.parametrize("connectivity", ["mixed", "separate"])
def test_dropped_kernels_do_not_touch_the_task_output(connectivity):
    model = highres(3, grouping=GroupingConfig(connectivity=connectivity))
    x = inputs(2, size=12)
    model(x)
    scramble(model, seed=4)
    before = map_outputs(model, x)
    from sfg_app.networks.compact import kept_kernels

    kept = kept_kernels(model, "task1")
    rng = np.random.default_rng(0)
    for stage, keep in zip(model.stages, kept):
        assert not keep.all()
        for conv in [stage.block.conv] + [c for unit in stage.units for c in unit.convs]:
            kernel = ops.convert_to_numpy(conv.kernel).copy()
            kernel[..., ~keep] = 100 * rng.normal(size=kernel[..., ~keep].shape)
            conv.kernel.assign(kernel)
    after = map_outputs(model, x)
    np.testing.assert_array_equal(after["task1"], before["task1"])
    assert not np.allclose(after["task0"], before["task0"])
