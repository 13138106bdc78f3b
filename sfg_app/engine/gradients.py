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


def _sum_in_order(gradients):
    if len(gradients) > 2 and all(isinstance(g, tf.Tensor) for g in gradients):
        return functools.reduce(tf.math.add, gradients)
    return _DEFAULT_SUM(gradients)


class ordered_gradient_sums(contextlib.AbstractContextManager):
    """Gradient steps traced and first run inside this block sum in a fixed order; the
    training driver runs its loop in one (named as contextlib's context managers are).

    Both settings are TensorFlow's and hold for the whole process, so the blocks of a
    process share one record of them, kept on this class under its lock and changed only
    by entering and leaving a block: the first block in saves and sets both, the last one
    out restores them, and a block nested in another or open in another thread meanwhile
    changes nothing.
    """

    _lock = threading.Lock()
    _open_blocks = 0
    _arithmetic_before: bool | None = None   # Grappler's option before the first block

    def __enter__(self):
        if _DEFAULT_SPACE is None:  # pragma: no cover - another TensorFlow layout
            warnings.warn(f"TensorFlow {tf.__version__} does not expose the tape's gradient "
                          "sum: runs of one seed may differ in their last bits between "
                          "processes (sfg is tested with TensorFlow 2.21).", SFGWarning,
                          stacklevel=2)
            return self
        record = ordered_gradient_sums
        with record._lock:
            if record._open_blocks == 0:
                record._arithmetic_before = \
                    tf.config.optimizer.get_experimental_options().get(ARITHMETIC)
                tf.config.optimizer.set_experimental_options({ARITHMETIC: False})
                _pywrap_tfe.TFE_Py_RegisterVSpace(
                    _DEFAULT_SPACE._replace(aggregate_fn=_sum_in_order))
            record._open_blocks += 1
        return self

    def __exit__(self, *exception) -> None:
        if _DEFAULT_SPACE is None:  # pragma: no cover - another TensorFlow layout
            return
        record = ordered_gradient_sums
        with record._lock:
            record._open_blocks -= 1
            if record._open_blocks == 0:
                _pywrap_tfe.TFE_Py_RegisterVSpace(_DEFAULT_SPACE)
                # Grappler's default for the arithmetic optimiser is on.
                before = record._arithmetic_before
                tf.config.optimizer.set_experimental_options(
                    {ARITHMETIC: True if before is None else before})
