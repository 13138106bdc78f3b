"""scripts/bench/bench_train.py, its untimed parts: the multiply-adds counted from the layer
shapes against hand counts, the FLOPs of a step, the demo size against configs/demo.ini,
and the config it writes (valid, with nothing written inside the timed steps)."""

from pathlib import Path

import pytest

from sfg_app.config import load_settings
from sfg_app.networks.compact import multiply_adds
from sfg_app.networks.cross_stitch import CrossStitchHighRes3DNet
from sfg_app.networks.hard_shared import HardSharedHighRes3DNet
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import SFGHighRes3DNet
from sfg_app.networks.stages import HIGHRES_STAGES
from sfg_app.networks.vgg import SFGVGG
from script_modules import load_script

REPO = Path(__file__).resolve().parents[2]
HEADS = {"seg": HeadSpec("voxel", 2), "reg": HeadSpec("voxel", 1)}


bench = load_script("scripts/bench/bench_train.py")


def _built(network):
    network.build((1, 8, 8, 8, 1))
    return network


def _highres(widths, in_channels=1):
    """Hand count of one HighRes3DNet column: per stage a 3x3x3 block from the previous
    width, then 3 residual units of two width-to-width 3x3x3 convolutions (stages 0-2)."""
    total, previous = 0, in_channels
    for width, units in zip(widths, (3, 3, 3, 0, 0)):
        total += 27 * (previous * width + 2 * units * width * width)
        previous = width
    return total


def test_multiply_adds_of_the_dense_and_fused_sfg_networks_equal_a_hand_count():
    # layer_scale 1/8: widths 2, 4, 8, 8, 8; heads 8 x 2 and 8 x 1.
    expected = _highres([2, 4, 8, 8, 8]) + 8 * 2 + 8 * 1
    dense = _built(HardSharedHighRes3DNet(HEADS, layer_scale=0.125))
    fused = _built(SFGHighRes3DNet(HEADS, layer_scale=0.125))
    assert bench.multiply_adds_per_voxel(dense) == expected == 18222
    assert bench.multiply_adds_per_voxel(fused) == expected
    assert expected == multiply_adds(HIGHRES_STAGES, [2, 4, 8, 8, 8], 1, 3, [2, 1])


def test_multiply_adds_of_cross_stitch_count_both_columns():
    # Two columns of round(width / 2) kernels: 1, 2, 4, 4, 4; each head on its column.
    expected = 2 * _highres([1, 2, 4, 4, 4]) + 4 * 2 + 4 * 1
    model = _built(CrossStitchHighRes3DNet(HEADS, layer_scale=0.125))
    assert bench.multiply_adds_per_voxel(model) == expected == 9138


def test_multiply_adds_refuse_a_network_that_pools():
    model = _built(SFGVGG({"kind": HeadSpec("image", 2)}, layer_scale=0.0625))
    with pytest.raises(ValueError, match="pools"):
        bench.multiply_adds_per_voxel(model)


def test_a_step_is_forward_and_twice_backward_at_two_flops_per_multiply_add():
    assert bench.training_flops(10, 7) == 3 * 2 * 10 * 7
    assert bench.SIZES["paper"].voxels == 2 * 96 ** 3


def test_the_demo_size_is_configs_demo_ini():
    settings = load_settings(REPO / "configs" / "demo.ini")
    demo = bench.SIZES["demo"]
    assert settings.inputs["MR"].spatial_window_size == (demo.window,) * 3
    assert settings.inputs["MR"].pixdim == demo.pixdim
    assert settings.network.layer_scale == demo.layer_scale
    assert settings.network.batch_size == demo.batch
    assert settings.network.volume_padding_size == (demo.padding,) * 3


@pytest.mark.parametrize("size", ["demo", "paper"])
def test_the_written_config_loads_without_validation_checkpoints_or_summaries(tmp_path, size):
    size = bench.SIZES[size]
    config = tmp_path / "bench.ini"
    config.write_text(bench.config_text(size))
    settings = load_settings(config, ["NETWORK.name=sfg_highres3dnet",
                                      "TRAINING.max_iter=25"])
    assert settings.inputs["MR"].spatial_window_size == (size.window,) * 3
    assert settings.inputs["MR"].pixdim == size.pixdim
    assert settings.sfg.impl == "fused" and settings.sfg.finetune_iter == 0
    training = settings.training
    assert training.validation_every_n == 0
    assert min(training.save_every_n, training.tensorboard_every_n) > training.max_iter
