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

A task type is one class, registered by name (`sfg_app.registry.TASKS`, or a plugin's
entry point in the group ``sfg_app.task_types``), and it owns everything that differs
between types, so that adding one is one module and one registry line:

- its `[TASK]` keys beside the common ones (``keys``: ``sfg_app.keys.Key`` objects,
  checked and documented by the config system like every other key), its losses (the
  first is the default), the targets it takes (``head_kinds``: ``voxel`` needs an image
  target, ``image`` one value per subject), whether its target holds labels
  (``label_target``: nearest-neighbour resampling, integer values) and which of its keys
  change what its outputs mean (``identity_keys``);
- its construction from the validated section (``from_settings``), its arguments checked
  by a `TaskArguments` (`sfg_app.tasks.checks`);
- its head (``head_kind``, ``head_channels``), loss, training metrics and decoding
  (``keras.ops`` through `sfg_app.tasks.keras_ops`, imported on first use: the config
  system reads the class attributes without loading Keras);
- two collaborators it holds, which another type may reuse: ``outputs``, what inference
  blends and the files it writes and reads back (`sfg_app.tasks.outputs`), and
  ``scoring``, its evaluation metrics (`sfg_app.tasks.scoring`).
"""

from __future__ import annotations

import functools
from typing import ClassVar

from sfg_app.keys import Bool, Int, Key, key
from sfg_app.tasks.checks import TaskArguments
from sfg_app.tasks.keras_ops import ops
from sfg_app.tasks.outputs import ClassOutputs, ValueOutputs

HEAD_KINDS = ("voxel", "image")

#: `[TASK] output_interp_order`, a key of the task types with voxel outputs.
OUTPUT_INTERP_ORDER = key(
    "output_interp_order", Int(0, 5), 1, "How outputs are resampled back to the input "
    "grid; segmentation resamples probabilities then takes the argmax, unless 0.")

#: The `[TASK]` keys every task type takes, passed to its constructor when set.
COMMON_OPTIONS = ("loss", "weight", "mask", "optional_target")


class Task:
    """Loss, training metrics and decoding of one network output.

    Subclasses set the class attributes below and change only what differs:
    ``head_channels``, ``encode_target``, ``batch_metrics``, ``decode`` and ``scoring``
    (and ``outputs`` when its files are not one volume, or one row, of values).
    """

    type_name: ClassVar[str] = ""
    #: The registered losses this type accepts; the first is the default.
    loss_names: ClassVar[tuple[str, ...]] = ()
    #: The type's own `[TASK]` keys; each is a keyword argument of the constructor.
    keys: ClassVar[tuple[Key, ...]] = ()
    #: ``voxel``: the target is an image, ``image``: one value per subject.
    head_kinds: ClassVar[tuple[str, ...]] = HEAD_KINDS
    #: The target holds labels: resampled with nearest neighbour, kept integer; also
    #: the default label map of the balanced sampler.
    label_target: ClassVar[bool] = False
    #: The type's `[TASK]` keys that change what its head's outputs mean: part of the
    #: identity of a trained network (restored with other values, it gives wrong outputs).
    identity_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_settings(cls, name: str, section, *, image_level: bool) -> "Task":
        """The task of a validated `[TASK name]` section; ``image_level``: its target
        section holds one value per subject (``value_column``)."""
        names = COMMON_OPTIONS + tuple(spec.name for spec in cls.keys)
        options = {key: getattr(section, key) for key in names
                   if getattr(section, key, None) is not None}
        return cls(name, section.target, head_kind="image" if image_level else "voxel",
                   **options)

    def __init__(self, name: str, target: str, *, head_kind: str, loss: str | None = None,
                 weight: float = 1.0, mask: str | None = None,
                 optional_target: bool = False, output_interp_order: int = 1):
        self.check = TaskArguments(name)
        self.name = name
        self.target = self.check.section_name(target, "target")
        if head_kind not in self.head_kinds:
            self.check.invalid("head_kind", head_kind, f"one of {', '.join(self.head_kinds)} "
                               f"for a {self.type_name or type(self).__name__} task")
        self.head_kind = head_kind
        self.mask = None if mask is None else self.check.section_name(mask, "mask")
        if self.mask is not None and head_kind == "image":
            self.check.invalid("mask", mask, "no mask: an image-level task has one value "
                               "per subject, not per voxel. Remove `mask` from the task")
        self.weight = self.check.number(weight, "weight", minimum=0.0)
        self.optional_target = self.check.flag(optional_target, "optional_target")
        self.output_interp_order = self.check.interp_order(output_interp_order,
                                                           "output_interp_order")
        self.loss_name = self.loss_names[0] if loss is None else loss
        self.loss_fn = self.check.loss(self.loss_name, self.loss_names, self.type_name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, target={self.target!r}, "
                f"loss={self.loss_name!r}, head={self.head_kind}x{self.head_channels})")

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
        """The network output in the target's terms, every tensor channels last; the
        key ``outputs.inferred_output`` is what inference blends."""
        raise NotImplementedError

    @functools.cached_property
    def outputs(self) -> ValueOutputs:
        """What inference blends and writes, and how it is read back
        (`sfg_app.tasks.outputs`): by default one volume (or table row) of values."""
        return ValueOutputs(self.name, self.output_interp_order)

    @functools.cached_property
    def scoring(self):
        """The metrics of a written output against its target: an object with
        ``score(prediction, truth, *, mask=None, spacing=None) -> {metric: value}``
        (`sfg_app.tasks.scoring`)."""
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
    """A task whose target is a class label: one-hot targets, softmax outputs; its
    outputs are `ClassOutputs` (the labels, and with ``save_probabilities`` the
    probabilities too)."""

    keys = (
        key("num_classes", Int(2), None, "Number of classes, background included.",
            required=True),
        key("save_probabilities", Bool(), False, "Also write the class probabilities."),
    )

    def __init__(self, name: str, target: str, *, num_classes: int,
                 save_probabilities: bool = False, **options):
        super().__init__(name, target, **options)
        self.num_classes = self.check.count(num_classes, "num_classes", minimum=2)
        self.save_probabilities = self.check.flag(save_probabilities, "save_probabilities")

    @property
    def head_channels(self) -> int:
        return self.num_classes

    @functools.cached_property
    def outputs(self) -> ClassOutputs:
        return ClassOutputs(self.name, self.output_interp_order, self.save_probabilities)

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
