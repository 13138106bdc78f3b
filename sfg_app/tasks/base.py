"""The task base class: what every `[TASK name]` section means to the network and loss.

A task turns one network output into a loss, a few training metrics and decoded outputs.
What it receives, per batch:

- ``y_pred``: the network output for the task, float logits or values, channels last:
  ``(B, *spatial, n)`` for a voxel-level task (2 or 3 spatial axes), ``(B, n)`` for an
  image-level one. Cast to float32 before any softmax or reduction (mixed precision).
- ``y_true``: the target batch as the data engine gives it: ``(B, *spatial, C)`` for a
  voxel-level task, ``(B, C)`` or ``(B,)`` for an image-level one; integer-valued floats
  for class targets, values in the target's own units for regression.
- ``mask``: optional, ``(B, *spatial, 1)`` or ``(B, *spatial)``; a voxel counts where
  ``mask > 0.5`` (robust to a mask that was interpolated).
- ``available``: optional, ``(B,)``; 1.0 where the example has the target, 0.0 where an
  optional target is missing.

Those become one weight per voxel (or example), ``valid * mask * available``, passed to
the registered loss (`sfg_app.tasks.losses`). ``valid`` is the task's own rule for a
usable target value (a label inside ``[0, num_classes)``, a finite regression value), so
a missing target filled with NaN or an ignore label such as -1 or 255 contributes
nothing. Everything here uses ``keras.ops`` and no Python branch on a tensor's values:
the same code runs on every Keras backend and inside compiled graphs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import ClassVar

from keras import ops

from sfg_app.errors import ConfigError
from sfg_app.registry import LOSSES

HEAD_KINDS = ("voxel", "image")


class Task:
    """Loss, training metrics and decoding of one network output.

    Subclasses set the class attributes below and change only what differs:
    ``head_channels``, ``encode_target``, ``batch_metrics`` and ``decode``.
    """

    type_name: ClassVar[str] = ""
    loss_names: ClassVar[tuple[str, ...]] = ()
    default_loss: ClassVar[str] = ""

    def __init__(self, name: str, target: str, *, head_kind: str, loss: str | None = None,
                 weight: float = 1.0, mask: str | None = None,
                 optional_target: bool = False, output_interp_order: int = 1,
                 save_probabilities: bool = False):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("Invalid value for argument `name` of a task. Expected a "
                              f"non-empty string. Received name={name!r}.")
        self.name = name
        self.target = self._section_name(target, "target")
        if head_kind not in HEAD_KINDS:
            self._invalid("head_kind", head_kind, f"one of {', '.join(HEAD_KINDS)}")
        self.head_kind = head_kind
        self.mask = None if mask is None else self._section_name(mask, "mask")
        if self.mask is not None and head_kind == "image":
            self._invalid("mask", mask, "no mask: an image-level task has one value per "
                          "subject, not per voxel. Remove `mask` from the task")
        self.weight = self._number(weight, "weight", minimum=0.0)
        self.optional_target = self._flag(optional_target, "optional_target")
        self.save_probabilities = self._flag(save_probabilities, "save_probabilities")
        if (isinstance(output_interp_order, bool) or not isinstance(output_interp_order, int)
                or not 0 <= output_interp_order <= 5):
            self._invalid("output_interp_order", output_interp_order,
                          "an integer from 0 (nearest neighbour) to 5 (spline order)")
        self.output_interp_order = output_interp_order
        self.loss_name = self.default_loss if loss is None else loss
        self.loss_fn = self._loss_function(self.loss_name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, target={self.target!r}, "
                f"loss={self.loss_name!r}, head={self.head_kind}x{self.head_channels})")

    # ---- argument checks (Keras-style messages naming the task and argument) ----

    def _invalid(self, argument: str, value, expected: str):
        raise ConfigError(f"Invalid value for argument `{argument}` of task {self.name!r}. "
                          f"Expected {expected}. Received {argument}={value!r}.")

    def _section_name(self, value, argument: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self._invalid(argument, value, "the name of an input section")
        return value

    def _flag(self, value, argument: str) -> bool:
        if not isinstance(value, bool):
            self._invalid(argument, value, "true or false")
        return value

    def _number(self, value, argument: str, minimum: float | None = None,
                strictly_positive: bool = False) -> float:
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value))
        if ok and strictly_positive:
            ok = value > 0
        if ok and minimum is not None:
            ok = value >= minimum
        if not ok:
            bound = ("a finite number > 0" if strictly_positive else
                     f"a finite number >= {minimum:g}" if minimum is not None else
                     "a finite number")
            self._invalid(argument, value, bound)
        return float(value)

    def _count(self, value, argument: str, minimum: int) -> int:
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                or value < minimum):
            self._invalid(argument, value, f"an integer >= {minimum}")
        return int(value)

    def _per_channel(self, value, argument: str, channels: int,
                     strictly_positive: bool = False) -> tuple[float, ...]:
        """One number for every channel, or one number per channel."""
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != channels:
                self._invalid(argument, value, f"one number, or {channels} numbers (one "
                              "per output channel)")
            return tuple(self._number(v, argument, strictly_positive=strictly_positive)
                         for v in value)
        return (self._number(value, argument, strictly_positive=strictly_positive),) * channels

    def _loss_function(self, loss: str):
        if loss in LOSSES.names() and loss not in self.loss_names:
            self._invalid("loss", loss, f"a loss for a {self.type_name} task: "
                          f"{', '.join(self.loss_names)}")
        try:
            return LOSSES.get(loss)
        except ConfigError as error:
            raise ConfigError(f"Invalid value for argument `loss` of task {self.name!r}. "
                              f"{error}") from None

    # ---- what subclasses define ----

    @property
    def head_channels(self) -> int:
        """Channels of the network output for this task."""
        raise NotImplementedError

    @property
    def loss_options(self) -> dict:
        """Keyword options passed to the loss function."""
        return {}

    def encode_target(self, y_true):
        """``(target, valid)``: the target in the loss's encoding, shaped like the output,
        and where its values are usable (shape of the output without channels)."""
        raise NotImplementedError

    def batch_metrics(self, target, y_pred, weights) -> dict:
        """``{metric_name: scalar}`` from the encoded target, float32 output and weights."""
        raise NotImplementedError

    def decode(self, y_pred) -> dict:
        """The network output in the target's terms, every tensor channels last."""
        raise NotImplementedError

    # ---- the shared pipeline ----

    def loss(self, y_true, y_pred, mask=None, available=None):
        """The task's loss on a batch, averaged over the counted voxels (a scalar)."""
        target, y_pred, weights = self._prepare(y_true, y_pred, mask, available)
        return self.loss_fn(target, y_pred, weights, **self.loss_options)

    def metrics(self, y_true, y_pred, mask=None, available=None) -> dict:
        """Cheap training metrics on a batch, ``{metric_name: scalar}``."""
        target, y_pred, weights = self._prepare(y_true, y_pred, mask, available)
        return self.batch_metrics(target, y_pred, weights)

    def _prepare(self, y_true, y_pred, mask, available):
        y_pred = self._output(y_pred)
        y_true = ops.cast(y_true, "float32")
        rank = len(y_pred.shape)
        if self.head_kind == "image" and len(y_true.shape) == 1:
            y_true = ops.expand_dims(y_true, -1)
        if len(y_true.shape) != rank:
            raise ValueError(f"Task {self.name!r}: the target batch must have the rank of "
                             f"the output, {rank} (channels last). Received target shape "
                             f"{tuple(y_true.shape)} for output shape {tuple(y_pred.shape)}.")
        target, valid = self.encode_target(y_true)
        weights = ops.cast(valid, "float32")
        if mask is not None:
            weights = weights * self._mask_weights(mask, rank)
        if available is not None:
            available = ops.reshape(ops.cast(available, "float32"), (-1,) + (1,) * (rank - 2))
            weights = weights * available
        return target, y_pred, weights

    def _mask_weights(self, mask, rank: int):
        if self.head_kind == "image":
            raise ValueError(f"Task {self.name!r} is image-level: it takes no mask.")
        mask = ops.cast(mask, "float32")
        if len(mask.shape) == rank:
            mask = ops.squeeze(mask, axis=-1)
        if len(mask.shape) != rank - 1:
            raise ValueError(f"Task {self.name!r}: the mask batch must be (B, *spatial, 1). "
                             f"Received shape {tuple(mask.shape)}.")
        return ops.cast(ops.greater(mask, 0.5), "float32")

    def _output(self, y_pred):
        """The network output as float32, its rank and channels checked."""
        y_pred = ops.cast(y_pred, "float32")
        ranks = (4, 5) if self.head_kind == "voxel" else (2,)
        shape = tuple(y_pred.shape)
        if len(shape) not in ranks or shape[-1] not in (None, self.head_channels):
            layout = ("(B, *spatial, n) with 2 or 3 spatial axes" if self.head_kind == "voxel"
                      else "(B, n)")
            raise ValueError(f"Task {self.name!r} ({self.head_kind}-level) expects an output "
                             f"{layout}, n={self.head_channels}. Received shape {shape}.")
        return y_pred


class CategoricalTask(Task):
    """A task whose target is a class label: one-hot targets, softmax outputs."""

    def __init__(self, name: str, target: str, *, num_classes: int, **options):
        super().__init__(name, target, **options)
        self.num_classes = self._count(num_classes, "num_classes", minimum=2)

    @property
    def head_channels(self) -> int:
        return self.num_classes

    def encode_target(self, y_true):
        """One-hot by comparison with every class index: a label outside
        ``[0, num_classes)`` (or NaN) gives a zero row and is not counted."""
        if y_true.shape[-1] not in (None, 1):
            raise ValueError(f"Task {self.name!r}: a label target has one channel. "
                             f"Received target shape {tuple(y_true.shape)}.")
        classes = ops.arange(self.num_classes, dtype="float32")
        one_hot = ops.cast(ops.equal(ops.round(y_true), classes), "float32")
        return one_hot, ops.greater(ops.sum(one_hot, axis=-1), 0.0)

    def predicted_one_hot(self, y_pred):
        classes = ops.arange(self.num_classes, dtype="int32")
        labels = ops.expand_dims(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), -1)
        return ops.cast(ops.equal(labels, classes), "float32")

    def decode(self, y_pred) -> dict:
        """``probabilities`` (softmax, float32) and ``labels`` (int32, one channel)."""
        y_pred = self._output(y_pred)
        labels = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        return {"probabilities": ops.softmax(y_pred, axis=-1),
                "labels": ops.expand_dims(labels, -1)}

