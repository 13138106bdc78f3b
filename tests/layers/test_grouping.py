"""The grouping posterior: config checks, temperature, routing, sampling, KL."""

import math

import numpy as np
import pytest
from keras import ops
from scipy import stats

from sfg_app.errors import ConfigError
from sfg_app.layers.grouping import (DirichletLogits, FilterGrouping, GroupingConfig,
                                     connectivity_matrix)


# -- GroupingConfig -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, pattern", [
    (dict(tau=0), r"argument `tau`\. Expected a number > 0\. Received tau=0"),
    (dict(tau=0.5, tau_min=1.0), r"`tau_min`\. Expected a temperature at most tau = 0\.5"),
    (dict(anneal_rate=-1e-3), r"`anneal_rate`\. Expected a number >= 0"),
    (dict(straight_through="yes"), r"`straight_through`\. Expected true or false"),
    (dict(sample_per="batch"), r"`sample_per`\. Expected one of step, example\. "
                               r"Received sample_per='batch'"),
    (dict(sample_per="example"), r"`sample_per`\. Expected step with impl = fused\. "
                                 r"Received sample_per='example'\. .*set impl = reference"),
    (dict(init="random"), r"`init`\. Expected uniform, dirichlet, shared, or a tuple of G "
                          r"probabilities \(numbers > 0 summing to 1\)\. "
                          r"Received init='random'\.$"),
    (dict(init="unifrom"), r"Received init='unifrom'\. Did you mean 'uniform'\?$"),
    (dict(init_shared=0.0), r"`init_shared`\. Expected a number > 0 and < 1"),
    (dict(init_shared=1.0), r"`init_shared`\. Expected a number > 0 and < 1"),
    (dict(logit_lr_multiplier=0), r"`logit_lr_multiplier`\. Expected a number > 0"),
    (dict(warmup_iter=-1), r"`warmup_iter`\. Expected an integer >= 0"),
    (dict(warmup_iter=2.5), r"`warmup_iter`\. Expected an integer >= 0"),
    (dict(norm_parameters="global"), r"`norm_parameters`\. Expected one of per_group, "
                                     r"shared"),
    (dict(logit_gradient="mean"), r"`logit_gradient`\. Expected one of sum, shared_mean, "
                                  r"balanced\. "
                                  r"Received logit_gradient='mean'"),
    (dict(init=(0.5, 0.6, 0.1)), r"`init`\. Expected G probabilities \(one per task, then "
                                 r"the shared group\) summing to 1\. .*They sum to 1\.2"),
    (dict(prior=(1.0, 0.0)), r"`prior`\. .*Item 2 \(0\.0\) is not a number > 0"),
    (dict(prior="flat"), r"`prior`\. Expected uniform, shared, or a tuple of G "
                         r"probabilities.*Received prior='flat'"),
    (dict(init_alpha=0.0), r"`init_alpha`\. Expected a number > 0"),
    (dict(connectivity="full"), r"`connectivity`\. Expected one of mixed, separate, "
                                r"dense"),
    (dict(impl="fast"), r"`impl`\. Expected one of fused, reference"),
    (dict(warmup_iter="ten"), r"`warmup_iter`\. Expected an integer >= 0 \(iterations\) "
                              r"or a number > 0 and < 1 \(a fraction of \[TRAINING\] "
                              r"max_iter\)\. Received warmup_iter='ten'"),
])
def test_grouping_config_names_the_bad_argument(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        GroupingConfig(**kwargs)


def test_grouping_config_normalises_vectors_and_round_trips():
    config = GroupingConfig(init=[0.2, 0.3, 0.5000001], prior=(1 / 3, 1 / 3, 1 / 3),
                            sample_per="example", impl="reference")
    assert isinstance(config.init, tuple) and math.isclose(sum(config.init), 1.0)
    assert GroupingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"`init`\. Expected 4 probabilities \(one per task"):
        config.check_num_groups(4)


def test_temperature_is_constant_or_annealed_to_the_floor():
    constant = GroupingConfig(tau=0.7, anneal_rate=0.0)
    assert float(constant.temperature(10_000)) == pytest.approx(0.7)
    annealed = GroupingConfig(tau=2.0, tau_min=0.1, anneal_rate=1e-3)
    for step in (0, 500, 2000):
        expected = max(0.1, 2.0 * math.exp(-1e-3 * step))
        assert float(annealed.temperature(step)) == pytest.approx(expected, rel=1e-6)
    assert float(annealed.temperature(10**6)) == pytest.approx(0.1)


def test_shared_init_and_prior_lean_to_the_shared_group_for_any_task_count():
    config = GroupingConfig(init="shared", prior="shared", init_shared=0.7)
    np.testing.assert_allclose(config.initial_probabilities(3), [0.15, 0.15, 0.7])
    np.testing.assert_allclose(config.prior_probabilities(4), [0.1, 0.1, 0.1, 0.7])
    layer = _built(5, 3, init="shared", prior="shared", init_shared=0.7)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.probabilities()),
                               [[0.15, 0.15, 0.7]] * 5, rtol=1e-5)
    assert float(layer.kl_divergence()) == pytest.approx(0.0, abs=1e-5)
    uniform = GroupingConfig(init="uniform")
    assert uniform.initial_probabilities(3) == pytest.approx([1 / 3] * 3)


def test_sampling_share_ramps_over_the_warm_up():
    assert float(GroupingConfig(warmup_iter=0).sampling_share(0)) == 1.0
    config = GroupingConfig(warmup_iter=100)
    assert [float(config.sampling_share(s)) for s in (0, 25, 100, 900)] == [0, 0.25, 1, 1]


@pytest.mark.parametrize("multiplier", [1.0, 30.0])
def test_logits_are_stored_divided_by_the_multiplier(multiplier):
    """An Adam step moves a stored value by about the learning rate, so theta moves
    `multiplier` times that: the grouping learns that much faster than the weights."""
    import keras

    layer = _built(4, 3, init="shared", init_shared=0.6, logit_lr_multiplier=multiplier)
    theta = np.log(np.array([0.2, 0.2, 0.6], np.float32))
    np.testing.assert_allclose(ops.convert_to_numpy(layer.logits), [theta] * 4, rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.stored_logits),
                               [theta / multiplier] * 4, rtol=1e-5)
    layer.assign_logits(np.zeros((4, 3), np.float32) + [1.0, 0.0, 0.0])
    np.testing.assert_allclose(ops.convert_to_numpy(layer.logits)[:, 0], 1.0, rtol=1e-6)
    before = ops.convert_to_numpy(layer.logits)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.apply([np.ones((4, 3), np.float32)], [layer.stored_logits])
    moved = before - ops.convert_to_numpy(layer.logits)
    np.testing.assert_allclose(moved, 1e-3 * multiplier, rtol=1e-2)


def test_warm_up_moves_from_the_expected_to_the_sampled_masks():
    layer = _built(6, 3, init="dirichlet", warmup_iter=10, seed=1)
    expected = ops.convert_to_numpy(layer.probabilities())
    np.testing.assert_allclose(
        ops.convert_to_numpy(layer.masks("train", 0.5, sampling_share=0.0)), expected,
        rtol=1e-6)
    sampled = ops.convert_to_numpy(layer.masks("train", 0.5, sampling_share=1.0))
    assert set(np.unique(sampled)) <= {0.0, 1.0}
    half = ops.convert_to_numpy(layer.masks("train", 0.5, sampling_share=0.5))
    one_hot = 2 * half - expected                  # half way: the mean of p and a sample
    np.testing.assert_allclose(np.sort(one_hot, -1), [[0, 0, 1]] * 6, atol=1e-6)


def test_connectivity_matrices():
    np.testing.assert_array_equal(connectivity_matrix("mixed", 3),
                                  [[1, 0, 0], [0, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(connectivity_matrix("separate", 3), np.eye(3))
    np.testing.assert_array_equal(connectivity_matrix("dense", 4), np.ones((4, 4)))


# -- FilterGrouping -------------------------------------------------------------------
def test_filter_grouping_generic(check_layer):
    layer = FilterGrouping(6, 3, GroupingConfig(init="dirichlet", init_alpha=0.5), seed=3,
                           name="sfg_x")
    probabilities = check_layer(layer, None, expected_shape=(6, 3), trainable=1)
    np.testing.assert_allclose(ops.convert_to_numpy(ops.sum(probabilities, -1)), 1.0,
                               rtol=1e-6)
    fixed = FilterGrouping(6, 3, GroupingConfig(learn_probabilities=False))
    check_layer(fixed, None, expected_shape=(6, 3), trainable=0, non_trainable=1)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(filters=0, num_groups=3), r"`filters`\. Expected a strictly positive integer\. "
                                    r"Received filters=0"),
    (dict(filters=4, num_groups=1), r"`num_groups`\. Expected at least 2 groups"),
    (dict(filters=4, num_groups=3, grouping=GroupingConfig(prior=(0.5, 0.5))),
     r"`prior`\. Expected 3 probabilities \(one per task, then the shared "
     r"group\)"),
    (dict(filters=4, num_groups=3, seed=-1), r"`seed`\. Expected None or an integer >= 0"),
])
def test_filter_grouping_argument_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        FilterGrouping(**kwargs)


def _built(filters, num_groups, seed=0, **config):
    layer = FilterGrouping(filters, num_groups, GroupingConfig(**config), seed=seed)
    layer.build()
    return layer


def test_initialisation_uniform_vector_and_seeded_dirichlet():
    uniform = _built(5, 3, init="uniform")
    np.testing.assert_allclose(ops.convert_to_numpy(uniform.probabilities()), 1 / 3)
    vector = _built(5, 3, init=(0.2, 0.3, 0.5))
    np.testing.assert_allclose(ops.convert_to_numpy(vector.probabilities()),
                               np.tile([0.2, 0.3, 0.5], (5, 1)), rtol=1e-6)
    first, second = (ops.convert_to_numpy(_built(50, 3, seed=7, init="dirichlet")
                                          .probabilities()) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert np.std(first[:, 0]) > 0.05          # kernels differ: a draw per kernel
    sharp = ops.convert_to_numpy(_built(400, 3, init="dirichlet", init_alpha=0.1)
                                 .probabilities())
    flat = ops.convert_to_numpy(_built(400, 3, init="dirichlet", init_alpha=50.0)
                                .probabilities())
    assert sharp.max(-1).mean() > 0.8 > 0.5 > flat.max(-1).mean()
    assert np.isfinite(ops.convert_to_numpy(_built(400, 3, init="dirichlet",
                                                   init_alpha=0.01).logits)).all()


def test_dirichlet_initializer_config():
    initializer = DirichletLogits(alpha=0.3, seed=2, scale=0.5)
    assert DirichletLogits(**initializer.get_config()).get_config() == {
        "alpha": 0.3, "seed": 2, "scale": 0.5}


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_straight_through_samples_follow_the_posterior(temperature):
    """Hard samples are one-hot and their group frequencies match softmax(logits) at any
    temperature: the argmax of (log p + Gumbel) / tau is a draw from Cat(p)."""
    probabilities = (0.1, 0.25, 0.65)
    layer = _built(4000, 3, seed=11, init=probabilities)
    counts = np.zeros(3)
    for _ in range(3):
        masks = ops.convert_to_numpy(layer.masks("train", temperature))
        np.testing.assert_allclose(masks, np.round(masks), atol=1e-6)
        np.testing.assert_allclose(masks.sum(-1), 1.0, atol=1e-6)
        counts += np.round(masks).sum(0)
    expected = np.asarray(probabilities) * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3


def test_sample_mode_draws_one_hot_from_the_posterior():
    layer = _built(6000, 3, seed=5, init=(0.5, 0.3, 0.2))
    masks = ops.convert_to_numpy(layer.masks("sample"))
    np.testing.assert_array_equal(masks.sum(-1), 1.0)
    assert stats.chisquare(masks.sum(0), np.array([0.5, 0.3, 0.2]) * 6000).pvalue > 1e-3


def _logit_gradient(gradients, layer, upstream, temperature):
    """The gradient on ``layer``'s logits of sum(masks * upstream) in train mode."""
    upstream = ops.convert_to_tensor(upstream)
    gradient, = gradients(lambda: ops.sum(layer.masks("train", temperature) * upstream),
                          [layer.stored_logits])
    return gradient


def test_straight_through_gradient_is_the_soft_gradient(gradients):
    """Forward one-hot, backward through softmax((log p + g) / tau): the two draws share
    the seed, so the soft sample is the one whose argmax the hard sample took."""
    weights = np.arange(12, dtype=np.float32).reshape(4, 3)
    hard_grad = _logit_gradient(gradients, _built(4, 3, seed=9, init="dirichlet"), weights,
                                0.5)
    soft_grad = _logit_gradient(gradients, _built(4, 3, seed=9, init="dirichlet",
                                                  straight_through=False), weights, 0.5)
    np.testing.assert_allclose(hard_grad, soft_grad, rtol=1e-5, atol=1e-6)
    assert np.abs(hard_grad).max() > 0


def test_balanced_masks_divide_the_shared_gradient_by_the_number_of_tasks(gradients):
    """Forward unchanged; backward, the shared column's gradient is 1/T of the plain one
    (T = 3 here): the logits' gradient equals the plain layer's under an upstream
    gradient whose shared column is divided by 3. Same seed, so the same draws."""
    weights = np.arange(20, dtype=np.float32).reshape(5, 4) - 7.0
    divided = weights.copy()
    divided[:, -1] /= 3.0
    np.testing.assert_array_equal(ops.convert_to_numpy(_built(
        5, 4, seed=3, init="dirichlet").masks("train", 0.7)), ops.convert_to_numpy(
        _built(5, 4, seed=3, init="dirichlet", logit_gradient="balanced").masks("train", 0.7)))
    expected = _logit_gradient(gradients, _built(5, 4, seed=3, init="dirichlet"), divided, 0.7)
    got = _logit_gradient(gradients, _built(5, 4, seed=3, init="dirichlet",
                                            logit_gradient="shared_mean"), weights, 0.7)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(got).max() > 0


def test_soft_samples_sharpen_as_the_temperature_falls():
    layer = _built(3000, 4, seed=2, init="uniform", straight_through=False)
    hot = ops.convert_to_numpy(layer.masks("train", 10.0))
    cold = ops.convert_to_numpy(layer.masks("train", 0.1))
    np.testing.assert_allclose(hot.sum(-1), 1.0, rtol=1e-5)
    assert hot.max(-1).mean() < 0.5 < 0.9 < cold.max(-1).mean()


def test_map_expected_and_per_example_masks():
    layer = _built(5, 3, init=(0.2, 0.2, 0.6))
    layer.assign_logits(np.log(np.array([[0.7, 0.2, 0.1]] * 2 + [[0.1, 0.1, 0.8]] * 3,
                                        np.float32)))
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.masks("map")),
                                  [[1, 0, 0]] * 2 + [[0, 0, 1]] * 3)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.masks("expected")),
                               [[0.7, 0.2, 0.1]] * 2 + [[0.1, 0.1, 0.8]] * 3, rtol=1e-6)
    per_example = _built(5, 3, sample_per="example", impl="reference")
    masks = ops.convert_to_numpy(per_example.masks("train", 1.0, batch_size=64))
    assert masks.shape == (64, 5, 3)
    assert len({m.tobytes() for m in masks}) > 1      # the examples differ
    with pytest.raises(ValueError, match="`batch_size` is required"):
        per_example.masks("sample")
    with pytest.raises(ConfigError, match=r"`mode`\. Expected one of train, map"):
        layer.masks("mean")


def test_regression_map_deals_tied_kernels_out_in_turn():
    # With tied probabilities (fixed uniform ones, or before training) map once put every
    # kernel in the first group: every other task's head read no channel at all.
    layer = _built(7, 3, init="uniform")
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.masks("map")).argmax(-1),
                                  [0, 1, 2, 0, 1, 2, 0])
    layer.assign_logits(np.log(np.array([[0.3, 0.4, 0.3]] * 7, np.float32)))
    assert (ops.convert_to_numpy(layer.masks("map")).argmax(-1) == 1).all()


def test_seeded_draws_repeat_across_layers_and_change_across_steps():
    first, second = _built(64, 3, seed=4), _built(64, 3, seed=4)
    a1, a2 = (ops.convert_to_numpy(first.masks("train", 1.0)) for _ in range(2))
    b1 = ops.convert_to_numpy(second.masks("train", 1.0))
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a1, a2)


def test_kl_divergence_to_uniform_and_given_priors():
    logits = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for prior in ("uniform", (0.2, 0.3, 0.5)):
        layer = _built(7, 3, prior=prior)
        layer.assign_logits(logits)
        pi = np.full(3, 1 / 3) if prior == "uniform" else np.asarray(prior)
        expected = float(np.sum(p * (np.log(p) - np.log(pi))))
        assert float(layer.kl_divergence()) == pytest.approx(expected, rel=1e-5)
    assert float(_built(7, 3).kl_divergence()) == pytest.approx(0.0, abs=1e-6)
