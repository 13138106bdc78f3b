"""Gradient sums in a fixed order (sfg_app/engine/gradients.py): what a traced gradient
holds inside and outside `ordered_gradient_sums()`, that the block restores TensorFlow's
settings, and that the training driver runs its loop inside it. (That runs of the demo
then end bit-identical: tests/engine/test_reproducible.py, slow.)"""

import numpy as np
import tensorflow as tf

from sfg_app.engine.gradients import ARITHMETIC, ordered_gradient_sums
from sfg_app.engine.handlers import Handler
from sfg_app.engine.training import TrainingDriver

from regression_app import RegressionApplication, plan


def traced_gradient_ops(consumers: int):
    """The ops of a traced gradient of x, which `consumers` ops read."""
    x = tf.Variable(np.linspace(0.1, 1.0, 8, dtype=np.float32))

    @tf.function(jit_compile=False)
    def step():
        with tf.GradientTape() as tape:
            loss = sum(tf.reduce_sum(tf.sin(x * (k + 1.0))) for k in range(consumers))
        return tape.gradient(loss, x)

    graph = step.get_concrete_function().graph
    return step, [(op.type, len(op.inputs)) for op in graph.get_operations()]


def test_a_sum_of_three_gradients_is_a_chain_of_two_term_adds():
    with ordered_gradient_sums():
        step, ops = traced_gradient_ops(3)
        value = step().numpy()
    assert not [op for op in ops if op[0] == "AddN" and op[1] > 2]
    _, unordered = traced_gradient_ops(3)   # the same step outside: TensorFlow's AddN
    assert ("AddN", 3) in unordered
    x = np.linspace(0.1, 1.0, 8, dtype=np.float32)
    terms = [(k + 1) * np.cos(x * (k + 1)) for k in range(3)]
    np.testing.assert_allclose(value, terms[0] + terms[1] + terms[2], rtol=1e-5)


def test_two_term_sums_stay_addn():
    with ordered_gradient_sums():
        _, ops = traced_gradient_ops(2)
    assert ("AddN", 2) in ops


def test_the_block_turns_the_arithmetic_rewrites_off_and_restores_them():
    assert tf.config.optimizer.get_experimental_options().get(ARITHMETIC) is not False
    with ordered_gradient_sums():
        with ordered_gradient_sums():   # re-entrant: the outer block still holds
            pass
        assert tf.config.optimizer.get_experimental_options()[ARITHMETIC] is False
        _, ops = traced_gradient_ops(3)
        assert ("AddN", 3) not in ops
    assert tf.config.optimizer.get_experimental_options()[ARITHMETIC] is True
    _, ops = traced_gradient_ops(3)
    assert ("AddN", 3) in ops


def test_a_user_choice_of_the_arithmetic_rewrites_is_restored():
    tf.config.optimizer.set_experimental_options({ARITHMETIC: False})
    try:
        with ordered_gradient_sums():
            pass
        assert tf.config.optimizer.get_experimental_options()[ARITHMETIC] is False
    finally:
        tf.config.optimizer.set_experimental_options({ARITHMETIC: True})


def test_the_training_driver_traces_and_runs_its_steps_inside_the_block(tmp_path):
    """Where the driver's step is traced and first run (its loop), the tape sums in order
    and Grappler's arithmetic rewrites are off; after the run, TensorFlow's defaults."""
    seen = {}

    class Look(Handler):
        def on_step_end(self, state):
            if not seen:
                seen["arithmetic"] = tf.config.optimizer.get_experimental_options()[ARITHMETIC]
                seen["ops"] = traced_gradient_ops(3)[1]

    TrainingDriver(RegressionApplication(), plan(tmp_path, max_iter=2),
                   extra_handlers=[Look()]).run()
    assert seen["arithmetic"] is False
    assert not [op for op in seen["ops"] if op[0] == "AddN" and op[1] > 2]
    assert tf.config.optimizer.get_experimental_options()[ARITHMETIC] is True
    assert ("AddN", 3) in traced_gradient_ops(3)[1]
