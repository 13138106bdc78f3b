"""Regression: values per voxel (e.g. a synthetic CT in HU) or per subject (e.g. an age)."""

from __future__ import annotations

from sfg_app.keys import Float, Int, key
from sfg_app.tasks.base import OUTPUT_INTERP_ORDER, Task
from sfg_app.tasks.keras_ops import ops
from sfg_app.tasks.losses import weighted_mean
from sfg_app.tasks.scoring import RegressionScoring

_POSITIVE = Float(0, low_open=True)


class RegressionTask(Task):
    """Real values (``[TASK name] type = regression``), ``out_channels`` of them.

    The network learns ``(y - target_shift) / target_scale`` (one number, or one per
    channel), a range near unit scale whatever the target's units; ``decode`` and the MAE
    metric are back in the target's units. ``head_kind`` is ``voxel`` when the target is
    an image, ``image`` when it is one value per subject. ``huber_delta`` is in the
    network's units, like the loss: ``huber_delta * target_scale`` in the target's units
    (the default 1.0 is one ``target_scale``, whatever the target's units).
    Losses: ``l1`` (default), ``l2``, ``huber``. Evaluated by MAE, RMSE, PSNR and SSIM
    on images, MAE and RMSE on per-subject values.
    """

    type_name = "regression"
    loss_names = ("l1", "l2", "huber")
    keys = (
        key("out_channels", Int(1), 1, "Channels of the regression output."),
        key("huber_delta", _POSITIVE, 1.0, "Delta of the huber loss."),
        key("target_shift", Float(), 0.0, "The network learns (y - target_shift) / "
            "target_scale; outputs are mapped back."),
        key("target_scale", _POSITIVE, 1.0, "See target_shift."),
        OUTPUT_INTERP_ORDER,
    )
    identity_keys = ("target_shift", "target_scale")
    scoring = RegressionScoring()

    def __init__(self, name: str, target: str, *, out_channels: int = 1,
                 head_kind: str = "voxel", target_shift=0.0, target_scale=1.0,
                 huber_delta: float = 1.0, **options):
        super().__init__(name, target, head_kind=head_kind, **options)
        self.out_channels = self.check.count(out_channels, "out_channels", minimum=1)
        self.target_shift = self.check.per_channel(target_shift, "target_shift",
                                                   self.out_channels)
        self.target_scale = self.check.per_channel(target_scale, "target_scale",
                                                   self.out_channels, strictly_positive=True)
        self.huber_delta = self.check.number(huber_delta, "huber_delta",
                                             strictly_positive=True)

    @property
    def head_channels(self) -> int:
        return self.out_channels

    @property
    def loss_options(self) -> dict:
        return {"delta": self.huber_delta} if self.loss_name == "huber" else {}

    def _shift_scale(self):
        return (ops.convert_to_tensor(self.target_shift, dtype="float32"),
                ops.convert_to_tensor(self.target_scale, dtype="float32"))

    def encode_target(self, y_true):
        """``(y - shift) / scale``; a voxel with any non-finite channel is not counted."""
        if y_true.shape[-1] not in (None, self.out_channels):
            raise ValueError(f"Task {self.name!r} has out_channels={self.out_channels}. "
                             f"Received target shape {tuple(y_true.shape)}.")
        shift, scale = self._shift_scale()
        finite = ops.isfinite(y_true)
        target = ops.where(finite, (y_true - shift) / scale, 0.0)
        return target, ops.all(finite, axis=-1)

    def batch_metrics(self, target, y_pred, weights) -> dict:
        """``mae`` in the target's units."""
        _, scale = self._shift_scale()
        error = ops.mean(ops.abs(y_pred - target) * scale, axis=-1)
        return {"mae": weighted_mean(error, weights)}

    def decode(self, y_pred) -> dict:
        """``values``: the output in the target's units, ``y * scale + shift``."""
        shift, scale = self._shift_scale()
        return {"values": self._output(y_pred) * scale + shift}
