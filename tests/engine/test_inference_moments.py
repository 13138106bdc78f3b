"""The inference driver's test-time sampling: mean and variance over K architectures."""

import numpy as np

from sfg_app.engine.inference import _moments
from sfg_app.layers.grouping import GroupingConfig
from sfg_app.networks.heads import HeadSpec
from sfg_app.networks.highres3dnet import SFGHighRes3DNet

HEADS = {"seg": HeadSpec("voxel", 3), "age": HeadSpec("image", 1)}


def network(**grouping):
    model = SFGHighRes3DNet(HEADS, layer_scale=0.25, seed=3,
                            grouping=GroupingConfig(**grouping))
    model.build((None, None, None, None, 1))
    return model


def image():
    return np.random.default_rng(0).normal(size=(2, 8, 8, 8, 1)).astype(np.float32)


def test_moments_are_those_of_the_sampled_architectures():
    model = network(init="dirichlet")
    model.set_architecture("sample")
    draws = []

    def predict(batch):
        draws.append({k: np.asarray(v) for k, v in model(batch, training=False).items()})
        return draws[-1]

    mean, variance = _moments(predict, image(), 4)
    seg = np.stack([d["seg"] for d in draws])
    age = np.stack([d["age"] for d in draws])
    assert len({s.tobytes() for s in seg}) == 4  # every draw a new architecture
    np.testing.assert_allclose(mean["seg"], seg.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance["seg"], seg.var(0), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(variance["age"], age.var(0), rtol=1e-4, atol=1e-9)
    assert variance["seg"].max() > 0


def test_a_certain_posterior_has_no_architecture_variance():
    model = network()
    for grouping in model.groupings:
        rows = np.arange(grouping.filters) % 3
        grouping.assign_logits(np.eye(3, dtype=np.float32)[rows] * 40.0)
    model.set_architecture("sample")
    mean, variance = _moments(lambda batch: model(batch, training=False), image(), 3)
    model.set_architecture("map")
    np.testing.assert_allclose(mean["seg"], np.asarray(model(image())["seg"]), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(variance["seg"], 0.0, atol=1e-10)


def test_one_sample_is_the_output_and_no_variance():
    model = network()
    model.set_architecture("map")
    mean, variance = _moments(lambda batch: model(batch, training=False), image(), 1)
    assert variance is None
    np.testing.assert_array_equal(mean["age"], np.asarray(model(image())["age"]))
