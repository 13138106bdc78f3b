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

- its `[TASK]` keys beside the common ones (``keys``: schema ``Key`` objects, checked
  and documented by the config system like every other key), its losses (the first is
  the default), the targets it takes (``head_kinds``: ``voxel`` needs an image target,
  ``image`` one value per subject) and whether its target holds labels (``label_target``:
  nearest-neighbour resampling, integer values);
- its construction from the validated section (``from_settings``);
- its head (``head_kind``, ``head_channels``), loss, training metrics and decoding
  (``keras.ops`` through `sfg_app.tasks.keras_ops`, imported on first use: the config
  system reads the class attributes without loading Keras);
- its outputs: what inference blends (``inferred_output``, ``blended_output``), the
  files it writes per subject (``output_kinds``, ``output_volumes``) or the columns of
  its table (``table_columns``), how they are read back (``prediction_from_row``), and
  its evaluation metrics (``evaluate``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from sfg_app import arguments
from sfg_app.config.schema import Key, key
from sfg_app.config.types import Bool, Int
from sfg_app.errors import ConfigError
from sfg_app.registry import LOSSES
from sfg_app.tasks.keras_ops import ops

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
    ``head_channels``, ``encode_target``, ``batch_metrics``, ``decode`` and ``evaluate``
    (and, for class outputs, the output methods that `CategoricalTask` changes).
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
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("Invalid value for argument `name` of a task. Expected a "
                              f"non-empty string. Received name={name!r}.")
        self.name = name
        self.target = self._section_name(target, "target")
        if head_kind not in self.head_kinds:
            self._invalid("head_kind", head_kind, f"one of {', '.join(self.head_kinds)} "
                          f"for a {self.type_name or type(self).__name__} task")
        self.head_kind = head_kind
        self.mask = None if mask is None else self._section_name(mask, "mask")
        if self.mask is not None and head_kind == "image":
            self._invalid("mask", mask, "no mask: an image-level task has one value per "
                          "subject, not per voxel. Remove `mask` from the task")
        self.weight = self._number(weight, "weight", minimum=0.0)
        self.optional_target = self._flag(optional_target, "optional_target")
        if (isinstance(output_interp_order, bool) or not isinstance(output_interp_order, int)
                or not 0 <= output_interp_order <= 5):
            self._invalid("output_interp_order", output_interp_order,
                          "an integer from 0 (nearest neighbour) to 5 (spline order)")
        self.output_interp_order = output_interp_order
        self.loss_name = self.loss_names[0] if loss is None else loss
        self.loss_fn = self._loss_function(self.loss_name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, target={self.target!r}, "
                f"loss={self.loss_name!r}, head={self.head_kind}x{self.head_channels})")

    # ---- argument checks (Keras-style messages naming the task and argument) ----

    def _invalid(self, argument: str, value, expected: str):
        raise arguments.invalid(argument, value, expected, owner=f"task {self.name!r}")

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

    def evaluate(self, prediction: np.ndarray, truth: np.ndarray, *, mask=None,
                 spacing=None) -> dict[str, float]:
        """``{metric: value}`` of one subject's written output against its target, both
        on the output's grid (``spacing`` in mm; ``mask``: counted where > 0.5)."""
        raise NotImplementedError

    # ---- outputs: what inference blends, writes and reads back ----

    @property
    def inferred_output(self) -> str:
        """The part of ``decode`` that inference blends over the windows."""
        return "values"

    def blended_output(self, *, resampled: bool, with_variance: bool) -> str:
        """What the blended volume holds (``values``, ``probabilities`` or ``labels``:
        see `sfg_app.data.aggregators`); ``resampled``: the subject's grid was
        resampled, so outputs go back through ``output_interp_order``."""
        return "values"

    def output_kinds(self, with_variance: bool) -> tuple[str, ...]:
        """The files written per subject of a voxel task, by kind: "" (the output),
        "var" (variance across sampled architectures, `sample` mode), and what a type
        adds (segmentation: "prob")."""
        return ("", "var") if with_variance else ("",)

    def output_volumes(self, blended: np.ndarray, output: str, undo) -> dict:
        """``{kind: (volume, dtype)}`` to write from the blended volume (``output`` says
        what it holds); ``undo(volume, order)`` takes a volume back to the input's grid
        (``order`` None: ``output_interp_order``). dtype None keeps the volume's."""
        return {"": (undo(blended, None), np.float32)}

    def variance_volume(self, variance: np.ndarray) -> np.ndarray:
        """The "var" output, one volume per output channel, from the blended variance
        of ``inferred_output``."""
        return variance

    def table_columns(self, values: np.ndarray) -> tuple[list[str], list[float]]:
        """An image-level output's columns in ``<task>.csv``: names and values."""
        return [f"{self.name}_{i}" for i in range(len(values))], list(values)

    def prediction_from_row(self, row: dict) -> np.ndarray:
        """The prediction written in a row of ``<task>.csv`` (``table_columns``)."""
        return np.array([float(value) for column, value in row.items()
                         if column.startswith(f"{self.name}_") and not column.endswith("_var")])

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
    """A task whose target is a class label: one-hot targets, softmax outputs; inference
    blends the probabilities and writes the labels (the argmax), and with
    ``save_probabilities`` the probabilities too."""

    keys = (
        key("num_classes", Int(2), None, "Number of classes, background included.",
            required=True),
        key("save_probabilities", Bool(), False, "Also write the class probabilities."),
    )

    def __init__(self, name: str, target: str, *, num_classes: int,
                 save_probabilities: bool = False, **options):
        super().__init__(name, target, **options)
        self.num_classes = self._count(num_classes, "num_classes", minimum=2)
        self.save_probabilities = self._flag(save_probabilities, "save_probabilities")

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


    @property
    def inferred_output(self) -> str:
        return "probabilities"

    def blended_output(self, *, resampled: bool, with_variance: bool) -> str:
        """Labels straight into one integer volume, unless the probabilities are needed:
        to be written, for the variance, or to resample back before the argmax."""
        needed = (self.save_probabilities or with_variance
                  or (resampled and self.output_interp_order > 0))
        return "probabilities" if needed else "labels"

    def output_kinds(self, with_variance: bool) -> tuple[str, ...]:
        kinds = super().output_kinds(with_variance)
        return kinds[:1] + ("prob",) + kinds[1:] if self.save_probabilities else kinds

    def output_volumes(self, blended: np.ndarray, output: str, undo) -> dict:
        """The labels (int32), and the probabilities resampled back (float32)."""
        if output == "labels":
            return {"": (undo(blended, 0), None)}
        probabilities = undo(blended, None)
        volumes = {"": (probabilities.argmax(axis=-1)[..., None].astype(np.int32), None)}
        if self.save_probabilities:
            volumes["prob"] = (probabilities, np.float32)
        return volumes

    def variance_volume(self, variance: np.ndarray) -> np.ndarray:
        """The probabilities' variance summed over the classes."""
        return variance.sum(axis=-1, keepdims=True)

    def table_columns(self, values: np.ndarray) -> tuple[list[str], list[float]]:
        """The probabilities, then ``label``, their argmax."""
        names, values = super().table_columns(values)
        return names + ["label"], values + [int(np.argmax(values))]

    def prediction_from_row(self, row: dict) -> np.ndarray:
        return np.array([float(row["label"])])
