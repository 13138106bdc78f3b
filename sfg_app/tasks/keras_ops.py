"""``keras.ops``, imported on first use.

The config system reads the task types to check a config (each type's `[TASK]` keys,
losses and target rules) and to print ``--help-config``; it must not pay for Keras' and
TensorFlow's import (about 4 s) to do so. The task modules therefore call ``ops.sum``,
``ops.where``... through this object, which imports ``keras.ops`` when the first loss or
metric is built, for the backend chosen by then (``KERAS_BACKEND``).
"""

from __future__ import annotations

import importlib


class _KerasOps:
    def __getattr__(self, name: str):
        value = getattr(importlib.import_module("keras.ops"), name)
        setattr(self, name, value)  # later lookups skip __getattr__
        return value


ops = _KerasOps()
