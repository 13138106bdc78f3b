"""Test-time sampling of architectures: mean and variance over K draws."""

import numpy as np
import pytest
from keras import ops

from sfg_app.errors import ConfigError
from sfg_app.layers.grouping import GroupingConfig
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import HardSharedHighRes3DNet, SFGHighRes3DNet
from sfg_app.networks.sampling import sample_statistics

HEADS = {"seg": HeadSpec("voxel", 3), "age": HeadSpec("image", 1)}


def network(**grouping):
    model = SFGHighRes3DNet(HEADS, layer_scale=0.25, seed=3,
                            grouping=GroupingConfig(**grouping))
    model.build((None, None, None, None, 1))
    return model


def x():
    return np.random.default_rng(0).normal(size=(2, 8, 8, 8, 1)).astype(np.float32)


def test_statistics_are_those_of_the_draws():
    model = network(init="dirichlet")
    model.set_architecture("map")
    draws = []
    predict = lambda batch: draws.append(model(batch)) or draws[-1]  # noqa: E731
    stats = sample_statistics(model, x(), 4, transforms={"seg": ops.softmax},
                              predict=predict)
    assert model.architecture == "map"                  # restored
    seg = np.stack([ops.convert_to_numpy(d["seg"]) for d in draws])
    age = np.stack([ops.convert_to_numpy(d["age"]) for d in draws])
    assert len({s.tobytes() for s in seg}) == 4          # every draw a new architecture
    probabilities = np.exp(seg) / np.exp(seg).sum(-1, keepdims=True)
    np.testing.assert_allclose(stats["seg"][0], probabilities.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["seg"][1], probabilities.var(0), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(stats["age"][1], age.var(0), rtol=1e-4, atol=1e-9)
    assert stats["seg"][0].shape == (2, 8, 8, 8, 3) and stats["age"][0].shape == (2, 1)
    assert stats["seg"][1].max() > 0


def test_a_certain_posterior_has_no_architecture_variance():
    model = network()
    for grouping in model.groupings:
        rows = np.arange(grouping.filters) % 3
        grouping.assign_logits(np.eye(3, dtype=np.float32)[rows] * 40.0)
    mean, variance = sample_statistics(model, x(), 3)["seg"]
    model.set_architecture("map")
    np.testing.assert_allclose(mean, ops.convert_to_numpy(model(x())["seg"]), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(variance, 0.0, atol=1e-10)


def test_dense_networks_and_bad_counts():
    dense = HardSharedHighRes3DNet(HEADS, layer_scale=0.25)
    mean, variance = sample_statistics(dense, x(), 2)["age"]
    np.testing.assert_array_equal(variance, 0.0)
    with pytest.raises(ConfigError, match=r"`num_samples`\. Expected a strictly positive "
                                          r"integer\. Received num_samples=0"):
        sample_statistics(dense, x(), 0)
