"""Checkpoints hold every weight of the networks, whatever their layers' structure."""

import os
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from sfg_app.engine.checkpoints import CheckpointStore
from sfg_app.errors import SFGWarning, TrainingError
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import SFGHighRes3DNet

from regression_app import RegressionApplication

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


# ---- damaged checkpoints ----

def _cut_data(prefix):
    data = prefix + ".data-00000-of-00001"
    os.truncate(data, os.path.getsize(data) // 2)


def _cut_index(prefix):
    os.truncate(prefix + ".index", os.path.getsize(prefix + ".index") // 2)


def _delete_data(prefix):
    os.remove(prefix + ".data-00000-of-00001")


def _overwrite_data(prefix):
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as handle:
        handle.write(bytes(range(256)) * (os.path.getsize(data) // 256 + 1))


def _flip_a_tensor(prefix):
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as handle:
        handle.seek(os.path.getsize(data) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


# What TensorFlow 2.21 raises for each, measured: IndexError ("Read less bytes than
# requested"), OpError ("not an sstable (bad magic number)"), OpError ("No such file or
# directory"), OpError ("Checksum does not match"), DataLossError ("Checksum does not match").
DAMAGE = {"cut data file": _cut_data, "cut index": _cut_index,
          "missing data file": _delete_data, "overwritten data file": _overwrite_data,
          "one flipped byte": _flip_a_tensor}


def small_run(tmp_path, iterations=(5, 10)):
    """Checkpoints of a small network and its Adam state, distinct weights in each;
    returns the weights saved at each iteration."""
    model = RegressionApplication().build_network()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer)
    saved = {}
    for iteration in iterations:
        for variable in model.weights:
            variable.assign(np.full(variable.shape, iteration, variable.dtype))
        optimizer.iterations.assign(iteration)
        store.save(iteration)
        saved[iteration] = model.get_weights()
    return saved


def fresh_store(tmp_path):
    model = RegressionApplication().build_network()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    return CheckpointStore(str(tmp_path), model=model, optimizer=optimizer), model, optimizer


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    saved = small_run(tmp_path)
    DAMAGE[damage](str(tmp_path / "checkpoints" / "ckpt-10"))
    store, model, optimizer = fresh_store(tmp_path)
    with pytest.warns(SFGWarning, match=r"iteration 10 cannot be read and is skipped "
                      r"\(.*ckpt-10.*\); trying the one before"):
        assert store.restore(-1) == 5
    for expected, restored in zip(saved[5], model.get_weights()):
        np.testing.assert_array_equal(expected, restored)
    assert int(optimizer.iterations.numpy()) == 5


def test_inference_falls_back_too(tmp_path):
    # Inference restores the network alone (partial): the same fallback.
    saved = small_run(tmp_path)
    _cut_data(str(tmp_path / "checkpoints" / "ckpt-10"))
    model = RegressionApplication().build_network()
    with pytest.warns(SFGWarning, match="iteration 10 cannot be read"):
        assert CheckpointStore(str(tmp_path), model=model).restore(-1, partial=True) == 5
    for expected, restored in zip(saved[5], model.get_weights()):
        np.testing.assert_array_equal(expected, restored)


def test_when_no_checkpoint_reads_the_error_names_them_all(tmp_path):
    small_run(tmp_path)
    _cut_data(str(tmp_path / "checkpoints" / "ckpt-10"))
    _cut_index(str(tmp_path / "checkpoints" / "ckpt-5"))
    store, _, _ = fresh_store(tmp_path)
    with pytest.raises(TrainingError) as error, pytest.warns(SFGWarning) as warned:
        store.restore(-1)
    message = str(error.value)
    assert re.search(r"No checkpoint in .*checkpoints can be read: iteration 10 \(.*ckpt-10"
                     r".*iteration 5 \(.*ckpt-5.*bad magic", message)
    assert "delete" in message and "[SYSTEM] model_dir" in message
    assert len(warned) == 2


def test_a_damaged_checkpoint_asked_for_by_number_is_an_error_not_another_one(tmp_path):
    small_run(tmp_path)
    _delete_data(str(tmp_path / "checkpoints" / "ckpt-10"))
    store, model, _ = fresh_store(tmp_path)
    before = model.get_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SFGWarning)  # no fallback, so nothing to warn of
        with pytest.raises(TrainingError, match=r"iteration 10 cannot be read .*ckpt-10\.index"
                           r".*ckpt-10\.data-00000-of-00001.*No such file.*\(5\).*starting_iter"):
            store.restore(10)
    for untouched, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(untouched, now)


def test_a_mismatch_is_not_taken_for_damage(tmp_path):
    small_run(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SFGWarning)
        with pytest.raises(TrainingError, match="does not fit the network"):
            CheckpointStore(str(tmp_path), model=network()).restore(-1, partial=True)
