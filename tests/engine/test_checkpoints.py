"""Checkpoints hold every weight of the networks, whatever their layers' structure."""

import numpy as np
import pytest
import tensorflow as tf

from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.errors import TrainingError
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import SFGHighRes3DNet

HEADS = {"a": HeadSpec("voxel", 2), "b": HeadSpec("voxel", 1)}


def network(layer_scale=0.25):
    model = SFGHighRes3DNet(HEADS, layer_scale=layer_scale)
    model(tf.zeros((1, 8, 8, 8, 1)))
    return model


def test_regression_subclassed_network_weights_are_all_saved_and_restored(tmp_path):
    # tf.train.Checkpoint(model=model) of this network once held 1 of its 125 variables:
    # TensorFlow does not track the layers a Keras 3 model keeps in lists.
    trained = network()
    rng = np.random.default_rng(0)
    for variable in trained.weights:
        if "float" in str(variable.dtype):
            variable.assign(rng.normal(size=variable.shape).astype(variable.dtype))
    CheckpointStore(str(tmp_path), model=trained).save(7)
    fresh = network()  # a second instance: Keras names it sfg_high_res3d_net_1
    assert fresh.name != trained.name
    assert CheckpointStore(str(tmp_path), model=fresh).restore(-1, partial=True) == 7
    for saved, restored in zip(trained.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(saved, restored)


def test_a_checkpoint_of_another_network_shape_is_a_clear_error(tmp_path):
    CheckpointStore(str(tmp_path), model=network(0.25)).save(1)
    with pytest.raises(TrainingError, match=r"does not fit the network.*settings.yaml"):
        CheckpointStore(str(tmp_path), model=network(0.5)).restore(-1, partial=True)
