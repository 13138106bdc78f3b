"""The layers and networks are backend-neutral: they run a training step on torch."""

import ast
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

TORCH_SCRIPT = textwrap.dedent("""
    import sys, tempfile, os
    import numpy as np
    import keras
    from keras import ops
    assert keras.backend.backend() == "torch"
    from sfg_app.layers.grouping import GroupingConfig
    from sfg_app.layers.sfg_conv import SFGConv
    from sfg_app.networks.heads import HeadSpec
    from sfg_app.registry import NETWORKS

    rng = np.random.default_rng(0)
    # fused and reference agree on torch too
    x = rng.normal(size=(2, 6, 6, 6, 4)).astype("float32")
    masks_in = np.eye(3, dtype="float32")[[0, 1, 2, 2]]
    masks_out = np.eye(3, dtype="float32")[[2, 1, 0, 0, 1]]
    outs = []
    for impl in ("fused", "reference"):
        conv = SFGConv(5, dilation_rate=2, impl=impl)
        conv.build(x.shape)
        conv.kernel.assign(np.linspace(-1, 1, 540, dtype="float32").reshape(3, 3, 3, 4, 5))
        outs.append(ops.convert_to_numpy(conv(x, groups_in=masks_in, groups_out=masks_out)))
    assert np.abs(outs[0] - outs[1]).max() <= 1e-5 * np.abs(outs[1]).max()

    cases = [
        ("sfg_highres3dnet", {"seg": HeadSpec("voxel", 3), "ct": HeadSpec("voxel", 1)}, 3,
         dict(seed=1, grouping=GroupingConfig(anneal_rate=1e-3))),
        ("sfg_highres3dnet", {"seg": HeadSpec("voxel", 2), "ct": HeadSpec("image", 1)}, 3,
         dict(seed=1, grouping=GroupingConfig(sample_per="example", impl="reference"))),
        ("sfg_vgg", {"age": HeadSpec("image", 1), "sex": HeadSpec("image", 2)}, 2,
         dict(seed=2)),
        ("highres3dnet", {"seg": HeadSpec("voxel", 2)}, 3, {}),
        ("hard_shared", {"seg": HeadSpec("voxel", 2), "ct": HeadSpec("voxel", 1)}, 2, {}),
        ("cross_stitch", {"seg": HeadSpec("voxel", 2), "ct": HeadSpec("voxel", 1)}, 3, {}),
    ]
    tensorflow_before_saving = None
    for name, heads, rank, options in cases:
        scale = 1 / 16 if name == "sfg_vgg" else 0.25
        model = NETWORKS.get(name)(heads, layer_scale=scale, **options)
        # sfg_vgg halves its input four times: 32 leaves 2 x 2 voxels for the last
        # stage's instance norm (over one voxel it would zero every activation).
        side = 32 if name == "sfg_vgg" else 12
        batch = rng.normal(size=(2,) + (side,) * rank + (1,)).astype("float32")
        optimizer = keras.optimizers.Adam(1e-2)
        model(batch)
        variables = model.trainable_variables
        before = [ops.convert_to_numpy(v).copy() for v in variables]
        if hasattr(model, "grouping_step"):
            model.grouping_step.assign(optimizer.iterations)
        outputs = model(batch, training=True)
        loss = model.grouping_kl()
        for value in outputs.values():
            assert str(value.dtype) == "torch.float32", value.dtype
            loss = loss + ops.mean(ops.square(value))
        model.zero_grad()
        loss.backward()
        grads = [v.value.grad for v in variables]
        assert all(g is not None for g in grads), name
        optimizer.apply(grads, variables)
        assert np.isfinite(float(loss.detach()))
        moved = sum(not np.array_equal(b, ops.convert_to_numpy(v))
                    for b, v in zip(before, variables))
        assert moved == len(variables), (name, moved, len(variables))
        model.set_architecture("map")
        expected = {k: ops.convert_to_numpy(v) for k, v in model(batch).items()}
        if tensorflow_before_saving is None:  # Keras' saving itself may import it
            tensorflow_before_saving = "tensorflow" in sys.modules
        path = os.path.join(tempfile.mkdtemp(), name + ".keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        restored.set_architecture("map")
        for task, value in restored(batch).items():
            np.testing.assert_array_equal(ops.convert_to_numpy(value), expected[task])
        print("ok", name)
    print("tensorflow imported:", tensorflow_before_saving)
""")


@pytest.mark.torch
def test_networks_train_and_reload_on_the_torch_backend(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    env = dict(os.environ, KERAS_BACKEND="torch", KERAS_HOME=str(tmp_path),
               CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", TORCH_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok ") == 6
    assert "tensorflow imported: False" in done.stdout


@pytest.mark.parametrize("folder", ["layers", "networks"])
def test_no_tensorflow_import(folder):
    """The model code uses keras and keras.ops only (architecture.md)."""
    for path in (REPO / "sfg_app" / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "tensorflow" for n in names), path
