"""Gradient sums in a fixed order, so that one seed gives the same bits in every process.

A tensor used by several ops receives one gradient from each, and TensorFlow's tape sums
them with one ``AddN``. ``AddN`` accumulates into an input buffer that it may reuse, and
moves that input to the front of the sum (``tensorflow/core/kernels/aggregate_ops.h``).
Whether a buffer may be reused depends on whether its other readers have already run,
which the executor decides at run time. With three terms or more, float addition not
being associative, the sum's last bits then depend on the process: the demo's runs parted
by 1-2 ULP in the gradient of the last SFG layer's logits (whose gradient is such a sum)
at iteration 92-95, with one thread, oneDNN off or ASLR off alike, and by iteration 110
every weight differed. ``tf.config.experimental.enable_op_determinism`` leaves ``AddN``
as it is.

Under ``ordered_gradient_sums()``:
- the tape sums three gradients or more as a chain of two-term adds in the order it lists
  them. Each add is commutative, so it gives the same bits whichever buffer it reuses,
  and the chain fixes the order. Two-term sums are left to ``AddN`` (exact for the same
  reason), and so are ``IndexedSlices``;
- Grappler's arithmetic optimiser is off: its ``AddOpsRewriteStage`` would merge each
  chain back into one ``AddN``. Measured on the demo with every gradient digested after
  each step, on one thread with oneDNN off: with the chains alone 2 of 6 processes still
  parted at the first step; with both, 6 of 6 agreed.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings

import tensorflow as tf

from sfg_app.errors import SFGWarning

try:  # The tape takes its sum from a registered "vector space"; there is no public hook.
    from tensorflow.python import pywrap_tfe as _pywrap_tfe
    from tensorflow.python.eager import backprop as _backprop
    _DEFAULT_SPACE = _backprop._default_vspace
    _DEFAULT_SUM = _backprop._aggregate_grads
except (ImportError, AttributeError):  # pragma: no cover - another TensorFlow layout
    _DEFAULT_SPACE = _DEFAULT_SUM = None

ARITHMETIC = "arithmetic_optimization"
_lock = threading.Lock()
_users = 0
_arithmetic_before = None


def _sum_in_order(gradients):
    if len(gradients) > 2 and all(isinstance(g, tf.Tensor) for g in gradients):
        return functools.reduce(tf.math.add, gradients)
    return _DEFAULT_SUM(gradients)


@contextlib.contextmanager
def ordered_gradient_sums():
    """Gradient steps traced and first run inside this block sum in a fixed order.

    Both settings are TensorFlow's, process-wide: re-entrant and shared between threads,
    the first block in sets them and the last one out restores what was there.
    """
    global _users, _arithmetic_before
    if _DEFAULT_SPACE is None:  # pragma: no cover - another TensorFlow layout
        warnings.warn(f"TensorFlow {tf.__version__} does not expose the tape's gradient "
                      "sum: runs of one seed may differ in their last bits between "
                      "processes (sfg is tested with TensorFlow 2.21).", SFGWarning,
                      stacklevel=3)
        yield
        return
    with _lock:
        if _users == 0:
            _arithmetic_before = tf.config.optimizer.get_experimental_options().get(ARITHMETIC)
            tf.config.optimizer.set_experimental_options({ARITHMETIC: False})
            _pywrap_tfe.TFE_Py_RegisterVSpace(
                _DEFAULT_SPACE._replace(aggregate_fn=_sum_in_order))
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _pywrap_tfe.TFE_Py_RegisterVSpace(_DEFAULT_SPACE)
                # Grappler's default for the arithmetic optimiser is on.
                tf.config.optimizer.set_experimental_options(
                    {ARITHMETIC: True if _arithmetic_before is None else _arithmetic_before})
