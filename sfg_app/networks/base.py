"""The multi-task network: a plan of stages, one head per task, and the grouping API.

A network is ``NetworkClass(heads={task: HeadSpec}, **options)``; its input is
channels-last of rank 4 (2D) or 5 (3D), its output ``{task: float32 tensor}``. The same
class of stages serves the SFG networks (grouping on) and the dense baselines (grouping
off), so their widths match by construction.

The architecture mode (``set_architecture``) is Python state read when a call is traced:
``train`` samples the groups as in training and lets ``training`` drive the
normalisation; ``map``, ``sample`` and ``expected`` are test-time architectures and always
normalise with the moving statistics. Keras' own compiled functions are reset on a change;
a caller that traces its own function per mode keeps one per mode.
"""

from __future__ import annotations

import keras
from keras import ops

from sfg_app.errors import ConfigError
from sfg_app import arguments
from sfg_app.layers.activations import ACTIVATIONS
from sfg_app.layers.blocks import NORM_LAYERS, Stage, TaskHead
from sfg_app.layers.grouping import MODES, FilterGrouping, GroupingConfig
from sfg_app.networks.heads import check_heads
from sfg_app.networks.stages import StageSpec


class MultiTaskNetwork(keras.Model):
    """Stages from ``plan`` (a class attribute), then one head per task on the last one."""

    plan: tuple[StageSpec, ...] = ()  # set by each network class
    head_kinds: tuple[str, ...] = ("voxel", "image")
    #: The network has SFG layers: its constructor takes ``grouping`` and ``seed``, and it
    #: has a ``temperature()``. Without them, the grouping API below is empty.
    is_sfg: bool = False
    #: Training steps that measure the tasks' agreement before the groups are decided
    #: (an SFG network with ``[SFG] allocation = agreement``).
    probe_iterations: int = 0

    def __init__(self, heads, layer_scale: float = 1.0, activation: str = "relu",
                 norm_layer: str = "instance", **kwargs):
        super().__init__(**kwargs)
        self.head_specs = check_heads(heads)
        self.task_names = list(self.head_specs)
        for task, spec in self.head_specs.items():
            if spec.kind not in self.head_kinds:
                raise ConfigError(
                    f"Invalid value for argument `heads`. {type(self).__name__} has "
                    f"{' or '.join(self.head_kinds)} heads only. Received kind="
                    f"{spec.kind!r} for task {task!r}.")
        self.layer_scale = arguments.positive_float(layer_scale, "layer_scale")
        self.activation = arguments.one_of(activation, "activation", ACTIVATIONS)
        self.norm_layer = arguments.one_of(norm_layer, "norm_layer", NORM_LAYERS)
        self._architecture = "train"
        self.groupings: list[FilterGrouping] = []

    # -- construction ---------------------------------------------------------------
    def width(self, filters: int) -> int:
        return max(1, int(round(filters * self.layer_scale)))

    def _make_stages(self, prefix: str = "stage", widths=None, **routing) -> list[Stage]:
        """The plan's stages, at the scaled widths unless ``widths`` are given."""
        widths = widths or [self.width(step.filters) for step in self.plan]
        return [Stage(width, residual_units=step.residual_units,
                      dilation_rate=step.dilation_rate, pool=step.pool,
                      activation=self.activation, norm_layer=self.norm_layer,
                      name=f"{prefix}_{i}", **routing)
                for i, (step, width) in enumerate(zip(self.plan, widths))]

    def _make_heads(self, grouped: bool) -> list[TaskHead]:
        return [TaskHead(spec.channels, spec.kind, task_index=i if grouped else None,
                         name=f"head_{task}")
                for i, (task, spec) in enumerate(self.head_specs.items())]

    def _check_input_shape(self, input_shape):
        if len(input_shape) not in (4, 5) or input_shape[-1] is None:
            raise ConfigError(
                f"Invalid input shape for network {type(self).__name__}. Expected "
                "(batch, x, y, channels) for 2D or (batch, x, y, z, channels) for 3D, "
                f"with known channels. Received input_shape={tuple(input_shape)}.")

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        shape = tuple(input_shape)
        for stage in self.stages:
            stage.build(shape)
            shape = stage.compute_output_shape(shape)
        for head in self.task_heads:
            head.build(shape)
        for grouping in self.groupings:
            grouping.build()

    # -- architecture mode ----------------------------------------------------------
    @property
    def architecture(self) -> str:
        return self._architecture

    def set_architecture(self, mode: str) -> None:
        """``train | map | sample | expected`` (see the module docstring)."""
        arguments.one_of(mode, "mode", MODES)
        if mode != self._architecture:
            self._architecture = mode
            self.train_function = self.test_function = self.predict_function = None

    def _normalisation_training(self, training) -> bool:
        return bool(training) and self._architecture == "train"

    def _masks(self, inputs) -> list:
        """Each stage's channel-to-group masks (``None``: grouping off)."""
        return [None] * len(self.stages)

    # -- the forward pass -----------------------------------------------------------
    def call(self, inputs, training=None):
        training = self._normalisation_training(training)
        x, previous = inputs, None
        for stage, groups in zip(self.stages, self._masks(inputs)):
            x = stage(x, groups_in=previous, groups_out=groups, training=training)
            previous = groups
        return {task: head(x, groups=previous)
                for task, head in zip(self.task_names, self.task_heads)}

    # -- grouping API (empty without SFG layers) ------------------------------------
    def grouping_kl(self):
        """sum over SFG layers of KL(q || prior): a float32 scalar, 0 without SFG."""
        if not self.groupings:
            return ops.zeros((), "float32")
        return ops.sum(ops.stack([g.kl_divergence() for g in self.groupings]))

    def grouping_probabilities(self) -> dict:
        """``{layer name: (kernels, groups) numpy}``; groups are the tasks, then shared."""
        return {g.name: ops.convert_to_numpy(g.probabilities()) for g in self.groupings}

    def grouping_agreement(self) -> dict:
        """``{layer name: (kernels,) numpy}``: the cosines between the tasks' gradients
        that decided each layer's groups (``[SFG] allocation = agreement``); empty
        otherwise."""
        return {g.name: g.measure.cosines() for g in self.groupings if g.measure is not None}

    def balanced_logits(self) -> list:
        """The logit variables that training moves with balanced task gradients
        (``[SFG] logit_gradient = balanced``), one per SFG layer; empty otherwise."""
        return []

    # -- serialisation --------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "heads": {task: spec.to_dict() for task, spec in self.head_specs.items()},
                "layer_scale": self.layer_scale, "activation": self.activation,
                "norm_layer": self.norm_layer}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SFGNetwork(MultiTaskNetwork):
    """A network whose stages are SFG layers: G = T + 1 groups, one grouping per stage
    (``sfg_<stage index>``), heads reading groups {task, shared}; with
    ``connectivity = dense`` every group reads every group and the heads read every
    channel, so the network is the hard-sharing limit whatever the masks.

    ``grouping_step`` (int64, not trainable) is the optimiser step that the training
    step assigns every step; the temperature is annealed from it and, being saved with
    the weights, continues across a resume.
    """

    is_sfg = True

    def __init__(self, heads, grouping: GroupingConfig | dict | None = None,
                 seed: int | None = None, **kwargs):
        super().__init__(heads, **kwargs)
        if isinstance(grouping, dict):
            grouping = GroupingConfig.from_dict(grouping)
        if grouping is not None and not isinstance(grouping, GroupingConfig):
            raise arguments.invalid("grouping", grouping, "a GroupingConfig")
        self.grouping = grouping or GroupingConfig()
        self.num_groups = len(self.task_names) + 1
        self.grouping.check_num_groups(self.num_groups)
        self.seed = arguments.optional_seed(seed)
        self.grouping_step = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica", name="grouping_step")
        self.stages = self._make_stages(
            num_groups=self.num_groups, connectivity=self.grouping.connectivity,
            impl=self.grouping.impl,
            shared_norm_parameters=self.grouping.norm_parameters == "shared")
        self.task_heads = self._make_heads(grouped=self.grouping.connectivity != "dense")
        self.groupings = [
            FilterGrouping(stage.filters, self.num_groups, self.grouping,
                           seed=None if self.seed is None else self.seed + i,
                           name=f"sfg_{i}")
            for i, stage in enumerate(self.stages)]

    def temperature(self):
        """The current Gumbel-softmax temperature, a float32 scalar tensor."""
        return self.grouping.temperature(self.grouping_step)

    def _masks(self, inputs) -> list:
        mode = self._architecture
        temperature = share = fixed = None
        if mode == "train":
            temperature = self.temperature()
            share = self.grouping.sampling_share(self.grouping_step)
            fixed = self.grouping.is_fixed(self.grouping_step)
        batch_size = ops.shape(inputs)[0]
        return [g.masks(mode, temperature, batch_size, share, fixed)
                for g in self.groupings]

    def grouping_kl(self):
        """sum over SFG layers of KL(q || prior); 0 once the architecture is fixed
        (``grouping.fixed_from``), so that the prior no longer moves the logits."""
        return super().grouping_kl() * (1.0 - self.grouping.is_fixed(self.grouping_step))

    @property
    def probe_iterations(self) -> int:
        """Training steps that measure the tasks' agreement before the groups are
        decided (``[SFG] allocation = agreement``: the warm-up); 0 otherwise."""
        if self.grouping.allocation != "agreement":
            return 0
        return self.grouping.iterations("warmup_iter")

    def grouped_kernels(self) -> list:
        """Per SFG layer, its stage's weights whose last axis is the layer's kernels
        (the convolutions), in a fixed order."""
        return [[w for w in stage.trainable_weights
                 if len(w.shape) >= 4 and w.shape[-1] == stage.filters]
                for stage in self.stages]

    def record_gradients(self, per_task) -> None:
        """``per_task[t]``: task t's gradients on ``grouped_kernels()``, flattened in
        order; folded into each layer's agreement measurement."""
        start = 0
        for grouping, kernels in zip(self.groupings, self.grouped_kernels()):
            end = start + len(kernels)
            grouping.record_gradients([grads[start:end] for grads in per_task])
            start = end

    def allocate_groups(self) -> dict:
        """Decides every layer's groups from the measured agreement:
        ``{layer: groups per kernel}``."""
        return {g.name: g.allocate() for g in self.groupings}

    def get_config(self):
        config = super().get_config()
        config.update(grouping=self.grouping.to_dict(), seed=self.seed)
        return config
