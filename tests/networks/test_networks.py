"""The networks: shapes, modes, routing on the built network, KL, save / load, training."""

import keras
import numpy as np
import pytest
from keras import ops

from sfg_app.errors import ConfigError
from sfg_app.layers.grouping import GroupingConfig
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import SFGHighRes3DNet
from sfg_app.registry import NETWORKS

SFG_NAMES = ("sfg_highres3dnet", "sfg_vgg")


def heads_for(name, tasks=2):
    if name == "sfg_vgg":
        return {f"task{t}": HeadSpec("image", t + 1) for t in range(tasks)}
    kinds = ("voxel", "image", "voxel")
    return {f"task{t}": HeadSpec(kinds[t], t + 2) for t in range(tasks)}


def make(name, tasks=2, **options):
    options.setdefault("layer_scale", 1 / 16 if name == "sfg_vgg" else 0.25)
    if name in SFG_NAMES:
        options.setdefault("seed", 0)
    return NETWORKS.get(name)(heads_for(name, tasks), **options)


def inputs(rank, size=16, channels=1, batch=2, seed=0):
    shape = (batch,) + (size,) * rank + (channels,)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(99)


def numpy_outputs(outputs):
    return {task: ops.convert_to_numpy(value) for task, value in outputs.items()}


@pytest.mark.parametrize("name", ["sfg_highres3dnet", "hard_shared", "cross_stitch",
                                  "sfg_vgg"])
@pytest.mark.parametrize("rank", [2, 3])
def test_networks_output_one_float32_tensor_per_task(name, rank):
    tasks = 3 if rank == 2 else 2
    model = make(name, tasks)
    x = inputs(rank, channels=2)
    outputs = model(x, training=True)
    assert list(outputs) == list(heads_for(name, tasks))
    for task, spec in heads_for(name, tasks).items():
        expected = x.shape[:-1] + (spec.channels,) if spec.kind == "voxel" \
            else (2, spec.channels)
        assert tuple(outputs[task].shape) == expected
        assert keras.backend.standardize_dtype(outputs[task].dtype) == "float32"
    if name in SFG_NAMES:
        assert all(p.shape[1] == tasks + 1 for p in model.grouping_probabilities().values())


def test_single_task_highres3dnet_and_the_matched_widths():
    single = make("highres3dnet", 1, layer_scale=1.0)
    shared = make("hard_shared", 2, layer_scale=1.0)
    sfg = make("sfg_highres3dnet", 2, layer_scale=1.0)
    stitched = make("cross_stitch", 2, layer_scale=1.0)
    widths = [16, 32, 64, 64, 64]
    assert [s.filters for s in single.stages] == widths
    assert [s.filters for s in shared.stages] == widths == [s.filters for s in sfg.stages]
    assert [s.filters for s in stitched.stages] == [w // 2 for w in widths] * 2
    assert [len(s.units) for s in sfg.stages] == [3, 3, 3, 0, 0]
    assert [s.dilation_rate for s in sfg.stages[:3]] == [1, 2, 4]
    for model in (single, shared, sfg):
        model.build((None, None, None, None, 1))
    # SFG adds only the logits and the per-group normalisation parameters.
    kernels = lambda model: [tuple(w.shape) for w in model.weights  # noqa: E731
                             if w.path.endswith("kernel")]
    assert kernels(shared) == kernels(sfg)


@pytest.mark.parametrize("name, heads, pattern", [
    ("highres3dnet", 2, r"highres3dnet is a single-task network\. Received 2 heads "
                        r"\(task0, task1\)\. Use hard_shared"),
    ("cross_stitch", 1, r"cross_stitch joins one column per task and needs at least 2"),
])
def test_head_count_errors(name, heads, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make(name, heads)


def test_argument_errors():
    with pytest.raises(ConfigError, match=r"SFGVGG has image heads only\. Received "
                                          r"kind='voxel' for task 'seg'"):
        NETWORKS.get("sfg_vgg")({"seg": HeadSpec("voxel", 2)})
    with pytest.raises(ConfigError, match=r"`heads`\. Expected a non-empty mapping"):
        SFGHighRes3DNet({})
    with pytest.raises(ConfigError, match=r"`channels`\. Expected a strictly positive"):
        SFGHighRes3DNet({"seg": {"kind": "voxel", "channels": 0}})
    with pytest.raises(ConfigError, match=r"`init`\. Expected 3 probabilities \(one per task"):
        make("sfg_highres3dnet", grouping=GroupingConfig(init=(0.5, 0.5)))
    with pytest.raises(ConfigError, match=r"`layer_scale`\. Expected a finite number > 0"):
        make("hard_shared", layer_scale=0)
    with pytest.raises(ConfigError, match=r"`activation`\. Expected one of relu"):
        make("hard_shared", activation="swish")
    with pytest.raises(ConfigError, match=r"`grouping`\. Expected a GroupingConfig"):
        make("sfg_highres3dnet", grouping="mixed")
    with pytest.raises(ConfigError, match=r"Expected \(batch, x, y, channels\) for 2D or "
                                          r"\(batch, x, y, z, channels\) for 3D"):
        make("hard_shared")(np.zeros((2, 16, 1), np.float32))
    with pytest.raises(ConfigError, match=r"`mode`\. Expected one of train, map, "
                                          r"sample, expected\. Received mode='eval'"):
        make("hard_shared").set_architecture("eval")


def _assign_groups(model, rng):
    """Every SFG layer's map groups: a cycle over the groups, so each has kernels."""
    assignment = []
    for grouping in model.groupings:
        groups = np.arange(grouping.filters) % grouping.num_groups
        rng.shuffle(groups)
        grouping.assign_logits(np.eye(grouping.num_groups, dtype=np.float32)[groups] * 5)
        assignment.append(groups)
    return assignment


@pytest.mark.parametrize("rank, tasks", [(3, 2), (2, 3)])
def test_specialist_channels_never_reach_other_tasks(rank, tasks, rng):
    """Perturbing the input of an SFG layer (the output of the layer before) in a
    channel of task 0 changes task 0's output and no other task's; a shared channel
    can change every task's. Map mode: moving statistics, one-hot groups."""
    model = make("sfg_highres3dnet", tasks, grouping=GroupingConfig(init="dirichlet"))
    x = inputs(rank, size=12)
    model(x, training=True)
    assignment = _assign_groups(model, rng)
    model.set_architecture("map")
    base = numpy_outputs(model(x))
    shared = tasks
    for layer in (1, 2):                        # the block whose output is perturbed
        conv = model.stages[layer].block.conv
        for group, expect_changed in ((0, {"task0"}),
                                      (shared, {f"task{t}" for t in range(tasks)})):
            channel = int(np.flatnonzero(assignment[layer] == group)[0])
            original = ops.convert_to_numpy(conv.kernel)
            bumped = original.copy()
            bumped[..., channel] += 0.5
            conv.kernel.assign(bumped)
            changed = {task for task, value in numpy_outputs(model(x)).items()
                       if not np.array_equal(value, base[task])}
            conv.kernel.assign(original)
            assert changed == expect_changed, (layer, group)


def test_dense_connectivity_lets_specialists_reach_every_task(rng):
    """The same perturbation under `dense` routing reaches the other task (so the test
    above can fail)."""
    model = make("sfg_highres3dnet", grouping=GroupingConfig(connectivity="dense"))
    x = inputs(3, size=12)
    model(x, training=True)
    assignment = _assign_groups(model, rng)
    model.set_architecture("map")
    base = numpy_outputs(model(x))
    conv = model.stages[1].block.conv
    channel = int(np.flatnonzero(assignment[1] == 0)[0])
    bumped = ops.convert_to_numpy(conv.kernel).copy()
    bumped[..., channel] += 0.5
    conv.kernel.assign(bumped)
    out = numpy_outputs(model(x))
    assert not np.array_equal(out["task1"], base["task1"])


def test_dense_connectivity_with_shared_norm_parameters_is_hard_sharing(rng):
    """With `dense` routing every group reads every group and the heads read every
    channel: whatever the sampled groups, the SFG network computes the hard-sharing
    network with the same weights (the limit `connectivity = dense` stands for)."""
    grouping = GroupingConfig(connectivity="dense", norm_parameters="shared",
                              init="dirichlet")
    model = make("sfg_highres3dnet", grouping=grouping)
    dense = make("hard_shared")
    x = inputs(3, size=12)
    model(x), dense(x)
    sfg_weights = [v for v in model.weights if "logits" not in v.path
                   and "grouping_step" not in v.path]
    assert len(sfg_weights) == len(dense.weights)
    for source, target in zip(sfg_weights, dense.weights):
        target.assign(source)
    expected = numpy_outputs(dense(x, training=True))
    for _ in range(2):                               # two sampled architectures
        for task, value in numpy_outputs(model(x, training=True)).items():
            np.testing.assert_allclose(value, expected[task], rtol=1e-4, atol=1e-4)


def test_warm_up_trains_the_expected_architecture_first(rng):
    model = make("sfg_highres3dnet", grouping=GroupingConfig(init="dirichlet",
                                                             warmup_iter=50))
    x = inputs(3, size=12)
    model(x, training=True)
    model.set_architecture("expected")
    expected = numpy_outputs(model(x, training=True))
    model.set_architecture("train")
    model.grouping_step.assign(0)
    at_start = numpy_outputs(model(x, training=True))
    model.grouping_step.assign(50)
    sampled = numpy_outputs(model(x, training=True))
    for task in expected:
        np.testing.assert_allclose(at_start[task], expected[task], rtol=1e-5, atol=1e-5)
        assert not np.allclose(sampled[task], expected[task], atol=1e-3)


def test_fixed_architecture_trains_the_map_network_and_stops_the_logits(rng):
    """From `fixed_from` on, a training step runs the map architecture, and neither the
    masks nor the KL term send a gradient to the logits."""
    model = make("sfg_highres3dnet", grouping=GroupingConfig(init="dirichlet",
                                                             fixed_from=20))
    x = inputs(3, size=12)
    model(x, training=True)
    model.set_architecture("map")
    decided = numpy_outputs(model(x))
    model.set_architecture("train")
    model.grouping_step.assign(19)
    sampled = numpy_outputs(model(x, training=True))
    assert float(model.grouping_kl()) > 0
    model.grouping_step.assign(20)
    fixed = numpy_outputs(model(x, training=True))
    for task in decided:
        np.testing.assert_allclose(fixed[task], decided[task], rtol=1e-5, atol=1e-5)
        assert not np.allclose(sampled[task], decided[task], atol=1e-3)
    logits = [g.stored_logits for g in model.groupings]

    def loss():
        outputs = model(x, training=True)
        return sum(ops.mean(v) for v in outputs.values()) + model.grouping_kl()

    _, grads = tape_gradients(loss, logits)
    assert all(g is None or not np.any(ops.convert_to_numpy(g)) for g in grads)


def test_modes_train_map_expected_sample(rng):
    model = make("sfg_highres3dnet", grouping=GroupingConfig(init="dirichlet", warmup_iter=0))
    x = inputs(3, size=12)
    first, second = (numpy_outputs(model(x, training=True)) for _ in range(2))
    assert not np.array_equal(first["task0"], second["task0"])   # a new draw each step
    model.set_architecture("map")
    moving = [ops.convert_to_numpy(v) for v in model.non_trainable_weights]
    a, b = (numpy_outputs(model(x, training=True)) for _ in range(2))
    np.testing.assert_array_equal(a["task0"], b["task0"])
    for before, after in zip(moving, model.non_trainable_weights):  # moving stats frozen
        np.testing.assert_array_equal(before, ops.convert_to_numpy(after))
    model.set_architecture("expected")
    expected = numpy_outputs(model(x))
    assert not np.array_equal(expected["task0"], a["task0"])
    model.set_architecture("sample")
    s1, s2 = (numpy_outputs(model(x)) for _ in range(2))
    assert not np.array_equal(s1["task0"], s2["task0"])
    assert model.architecture == "sample"


def test_set_architecture_resets_keras_compiled_functions():
    model = make("hard_shared")
    x = inputs(3, size=8)
    model.predict(x, verbose=0)
    assert model.predict_function is not None
    model.set_architecture("map")
    assert model.predict_function is None


def tape_gradients(function, variables):
    """Gradients by TensorFlow's tape (these tests run on the default backend; the
    torch backend is covered by test_torch_backend.py)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("gradients here use tf.GradientTape")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        value = function()
    return value, tape.gradient(value, variables)


def test_grouping_kl_and_probabilities():
    dense = make("hard_shared")
    assert float(dense.grouping_kl()) == 0.0 and dense.grouping_probabilities() == {}
    assert dense.grouping_agreement() == {}
    model = make("sfg_highres3dnet", grouping=GroupingConfig(
        init="dirichlet", prior=(0.25, 0.25, 0.5)))
    model.build((None, 8, 8, 8, 1))
    probabilities = model.grouping_probabilities()
    assert list(probabilities) == [f"sfg_{i}" for i in range(5)]
    expected = 0.0
    for p in probabilities.values():
        np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
        expected += float(np.sum(p * (np.log(p) - np.log([0.25, 0.25, 0.5]))))
    assert float(model.grouping_kl()) == pytest.approx(expected, rel=1e-4)
    _, grads = tape_gradients(model.grouping_kl, [g.stored_logits for g in model.groupings])
    assert all(np.abs(ops.convert_to_numpy(g)).max() > 0 for g in grads)


def test_temperature_follows_the_grouping_step_and_survives_saving(tmp_path):
    model = make("sfg_highres3dnet", grouping=GroupingConfig(tau=2.0, tau_min=0.5,
                                                             anneal_rate=1e-3))
    model.build((None, None, None, None, 1))
    assert float(model.temperature()) == pytest.approx(2.0)
    model.grouping_step.assign(1000)
    assert float(model.temperature()) == pytest.approx(2.0 * np.exp(-1.0), rel=1e-6)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert int(ops.convert_to_numpy(restored.grouping_step)) == 1000
    assert float(restored.temperature()) == pytest.approx(float(model.temperature()))
    assert not restored.grouping_step.trainable


@pytest.mark.parametrize("name, options", [
    ("sfg_highres3dnet", dict(activation="prelu", grouping=GroupingConfig(
        init="dirichlet", learn_probabilities=False, impl="reference"))),
    ("sfg_vgg", dict(norm_layer="instance", activation="elu")),
    ("highres3dnet", dict(norm_layer="none", activation="leaky_relu")),
    ("hard_shared", {}),
    ("cross_stitch", {}),
])
def test_save_and_load_keep_map_outputs(name, options, tmp_path):
    model = make(name, 1 if name == "highres3dnet" else 2, **options)
    x = inputs(2 if name == "sfg_vgg" else 3, size=12)
    model(x, training=True)                       # moves the moving statistics
    model.set_architecture("map")
    before = numpy_outputs(model(x))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    restored.set_architecture("map")
    after = numpy_outputs(restored(x))
    for task in before:
        np.testing.assert_array_equal(before[task], after[task])


def test_training_steps_lower_the_loss_and_learn_the_grouping():
    model = make("sfg_highres3dnet", grouping=GroupingConfig(tau=0.5))
    x = inputs(3, size=12)
    targets = {"task0": np.tanh(x) * np.ones(2, np.float32), "task1": np.ones((2, 3))}
    optimizer = keras.optimizers.Adam(1e-2)

    def loss():
        outputs = model(x, training=True)
        return sum(ops.mean(ops.square(outputs[t] - targets[t])) for t in targets) \
            + 1e-3 * model.grouping_kl()

    model(x)
    variables = model.trainable_variables
    logits_before = [ops.convert_to_numpy(g.logits) for g in model.groupings]
    losses = []
    for step in range(8):
        model.grouping_step.assign(step)
        value, grads = tape_gradients(loss, variables)
        assert all(g is not None for g in grads)
        optimizer.apply(grads, variables)
        losses.append(float(value))
    assert losses[-1] < losses[0]
    assert any(not np.array_equal(before, ops.convert_to_numpy(g.logits))
               for before, g in zip(logits_before, model.groupings))


def test_fixed_probabilities_are_not_trained():
    model = make("sfg_highres3dnet", grouping=GroupingConfig(learn_probabilities=False))
    model.build((None, None, None, None, 1))
    assert not any("logits" in v.path for v in model.trainable_variables)
    assert sum("logits" in v.path for v in model.non_trainable_variables) == 5


def test_per_example_sampling_runs_with_the_reference_implementation():
    model = make("sfg_highres3dnet", grouping=GroupingConfig(sample_per="example",
                                                             impl="reference"))
    x = inputs(3, size=8, batch=3)
    outputs = model(x, training=True)
    assert tuple(outputs["task0"].shape) == (3, 8, 8, 8, 2)
    masks = model.groupings[0].masks("train", 1.0, batch_size=3)
    assert tuple(masks.shape) == (3, 4, 3)


def test_mixed_precision_outputs_float32():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = make("sfg_highres3dnet")
        outputs = model(inputs(3, size=8), training=True)
        kl = model.grouping_kl()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert model.stages[0].compute_dtype == "bfloat16"
    for value in list(outputs.values()) + [kl]:
        assert keras.backend.standardize_dtype(value.dtype) == "float32"

