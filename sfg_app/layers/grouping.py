"""The learned assignment of an SFG layer's kernels to groups (Bragman et al. 2019).

Kernel k of a layer has logits theta_k over G = T + 1 groups ordered
``[task_1, ..., task_T, shared]``; its posterior is q(z_k) = Cat(softmax(theta_k)). A
training step draws a concrete (Gumbel-softmax) sample: Gumbel noise is added to the
LOG-probabilities (the authors' code added it to p, which does not sample Cat(p)), then
divided by the temperature. Straight-through samples are one-hot forward and soft backward.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from sfg_app import arguments
from sfg_app.config.schema import SFG
from sfg_app.config.types import checked_argument
from sfg_app.layers.agreement import TaskAgreement

MODES = ("train", "map", "sample", "expected")
CONNECTIVITIES = SFG.keys["connectivity"].type.options
IMPLEMENTATIONS = SFG.keys["impl"].type.options


#: Where a network built without a config departs from the schema's ``[SFG]`` defaults.
#: The schema's allocation, agreement, is decided by sfg's training driver, which records
#: each task's gradients (`sfg_app.engine.training`); a network trained by other means
#: (Keras ``fit``) can only learn its groups through its own loss, as the paper's do, over
#: the learned recipe's warm-up in iterations (a fraction needs the run's length).
STANDALONE_DEFAULTS = {"allocation": "learned", "warmup_iter": 150}
#: Each allocation's warm-up when ``[SFG] warmup_iter`` is not given (its default, None).
WARMUP = {"agreement": 1 / 3, "learned": 150}
#: ``allocation = auto`` decides from the tasks' agreement when its warm-up holds at
#: least this many iterations: over 80-100 (runs of 240-300) the measurement split
#: related tasks too; over 333 (runs of 1000) it followed relatedness (docs/results.md).
AGREEMENT_MIN_WARMUP = 300


def _default(name: str):
    """The default of ``[SFG] name``: the schema's, but for `STANDALONE_DEFAULTS`."""
    return STANDALONE_DEFAULTS.get(name, SFG.keys[name].default)


@dataclasses.dataclass(frozen=True)
class GroupingConfig:
    """How every SFG layer of a network samples, anneals and routes its groups.

    The field names are the keys of the config's ``[SFG]`` section. ``anneal_rate = 0``
    keeps the temperature constant at ``tau``; otherwise
    ``tau(i) = max(tau_min, tau * exp(-anneal_rate * i))`` for optimiser step ``i``.
    ``init`` and ``prior`` take a tuple of G probabilities (tasks in order, then shared);
    its length is checked by ``check_num_groups`` once the number of tasks is known.
    ``init = 'shared'`` gives the shared group ``init_shared`` and splits the rest evenly
    over the tasks, whatever their number.

    Why the levers beyond the paper's: at uniform probabilities the gradient that reaches
    the logits is mostly noise, and Adam moves each logit by about the learning rate a
    step, so within an affordable run the grouping does not move (SFG.md). The logits are
    therefore held divided by ``logit_lr_multiplier`` (an Adam step moves them that many
    times faster than the weights); ``warmup_iter`` trains on the expected architecture
    first (soft masks equal to p: a deterministic gradient for the logits) and moves
    linearly to sampled architectures; ``norm_parameters = shared`` lets every group's
    channels train one normalisation scale and offset, which a sampled group would
    otherwise train only a 1/G of the steps. From optimiser step ``fixed_from`` on
    (``None``: never) training runs the ``map`` architecture and the logits stop training:
    a sampled architecture perturbs every step the way dropout does, and the weights are
    then tuned for the one network that inference runs (in a 2D trial, a kernel switched
    out of the shared group 5% of the steps cost the synthesis about 50 HU of MAE).
    ``logit_gradient = shared_mean`` (``masks`` divides the shared group's gradient by
    the number of tasks; ``balanced`` also has the training driver equalise the tasks'
    gradients): under the straight-through estimate a shared kernel's mask collects the
    gradient of every head it reaches, so with ``sum`` the shared group wins wherever a
    kernel helps anyone. ``allocation = agreement`` replaces the learned logits: the
    warm-up (``warmup_iter`` steps) trains every kernel shared and measures per kernel how
    well the tasks' gradients on its weights agree (``record_gradients``), then
    ``allocate`` decides the groups and ``fixed_from`` is the end of the warm-up; the
    start and prior then decide nothing. What the first-order logit gradient cannot see
    is exactly this: whether one task's step on a kernel helps or hurts the others.

    The defaults are the config schema's ``[SFG]`` defaults (the recipe that
    docs/results.md measured; the section's doc lists the paper's own values), so that a
    network built without a config and one built from a config differ only where a key
    was set, or where a network trained without sfg's driver could not follow the schema
    (`STANDALONE_DEFAULTS`: the learned allocation). ``warmup_iter`` and
    ``transition_iter`` may be fractions of the run, as the keys may: ``for_run`` turns
    them into iterations for a run of a given length, and training refuses a grouping
    that still holds a fraction. ``for_run`` also resolves ``allocation = auto`` (the
    schema's default), and ``warmup_iter = None`` (the allocation's own, `WARMUP`).
    ``fixed_from`` has no key (``for_run`` derives it from ``[SFG] finetune_iter`` and the
    run's length, or from the warm-up with ``allocation = agreement``); its default None
    never fixes the grouping.
    """

    tau: float = _default("tau")
    tau_min: float = _default("tau_min")
    anneal_rate: float = _default("anneal_rate")
    straight_through: bool = _default("straight_through")
    sample_per: str = _default("sample_per")
    learn_probabilities: bool = _default("learn_probabilities")
    init: str | tuple[float, ...] = _default("init")
    init_alpha: float = _default("init_alpha")
    prior: str | tuple[float, ...] = _default("prior")
    init_shared: float = _default("init_shared")
    connectivity: str = _default("connectivity")
    impl: str = _default("impl")
    logit_lr_multiplier: float = _default("logit_lr_multiplier")
    warmup_iter: int | float | None = _default("warmup_iter")
    transition_iter: int | float = _default("transition_iter")
    norm_parameters: str = _default("norm_parameters")
    logit_gradient: str = _default("logit_gradient")
    allocation: str = _default("allocation")
    agreement_threshold: float = _default("agreement_threshold")
    agreement_split: str = _default("agreement_split")
    fixed_from: int | None = None

    def __post_init__(self):
        """Each value is checked against the type of its `[SFG]` key (the schema is the
        one declaration of what a key takes), then the rules between keys
        (`arguments.grouping_problems`, which the config applies too)."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "fixed_from":
                value = None if value is None else arguments.non_negative_int(value,
                                                                              "fixed_from")
            elif field.name == "warmup_iter" and value is None:
                pass  # the allocation's own warm-up, once for_run knows the allocation
            else:
                value = checked_argument(SFG.keys[field.name].type, value, field.name)
            object.__setattr__(self, field.name, value)  # frozen: numbers made float
        for key, expected, hint in arguments.grouping_problems(dataclasses.asdict(self))[:1]:
            raise arguments.invalid(key, getattr(self, key), expected, hint)
        for key in ("init", "prior"):  # summing to 1 within 1e-3: renormalised
            vector = getattr(self, key)
            if not isinstance(vector, str):
                object.__setattr__(self, key, tuple(v / sum(vector) for v in vector))

    def for_run(self, max_iter: int, finetune_iter: int | float = 0) -> "GroupingConfig":
        """This grouping for a run of ``max_iter`` iterations: its allocation (``auto``:
        agreement when that warm-up holds at least `AGREEMENT_MIN_WARMUP` iterations and
        ends before the run does, else learned), its schedules in iterations, and
        ``fixed_from`` set where the groups are fixed: when the warm-up ends with
        agreement (its measurement decides them then), else at the start of the last
        ``finetune_iter`` iterations (iterations or a fraction of the run; 0: never)."""
        allocation = self.allocation
        if allocation == "auto":
            measured = arguments.schedule_iterations(
                WARMUP["agreement"] if self.warmup_iter is None else self.warmup_iter,
                max_iter)
            allocation = ("agreement" if AGREEMENT_MIN_WARMUP <= measured < max_iter
                          else "learned")
        warmup = WARMUP[allocation] if self.warmup_iter is None else self.warmup_iter
        warmup = arguments.schedule_iterations(warmup, max_iter)
        finetune = min(arguments.schedule_iterations(finetune_iter, max_iter), max_iter)
        fixed_from = max_iter - finetune if finetune else None
        if allocation == "agreement":
            fixed_from = warmup
        return dataclasses.replace(
            self, allocation=allocation, warmup_iter=warmup, fixed_from=fixed_from,
            transition_iter=arguments.schedule_iterations(self.transition_iter, max_iter))

    def iterations(self, name: str) -> int:
        """The schedule ``name`` (``warmup_iter``, ``transition_iter``) in iterations;
        raises while it is still a fraction of a run whose length this grouping does not
        know."""
        value = getattr(self, name)
        if isinstance(value, float) or value is None or self.allocation == "auto":
            what = ("`allocation` is auto, decided from the run's length: give learned or "
                    "agreement" if self.allocation == "auto" else
                    f"`{name}` is {value:g}, a fraction of the run: give it in iterations"
                    if value is not None else
                    f"`{name}` is None, the allocation's own: give it in iterations")
            raise ValueError(f"{what}, or train with `grouping.for_run(max_iter)`, which "
                             f"resolves it (the application does so with [TRAINING] "
                             f"max_iter).")
        return value

    def check_num_groups(self, num_groups: int) -> None:
        """Raises unless the ``init`` and ``prior`` vectors have one entry per group."""
        values = dataclasses.asdict(self)
        for key, expected, hint in arguments.grouping_problems(values, num_groups)[:1]:
            raise arguments.invalid(key, values[key], expected, hint)

    def temperature(self, step):
        """tau at optimiser step ``step`` (a tensor or number), as a float32 tensor."""
        step = ops.cast(step, "float32")
        return ops.maximum(self.tau_min, self.tau * ops.exp(-self.anneal_rate * step))

    def sampling_share(self, step):
        """How far training has moved from the expected to the sampled architecture at
        optimiser step ``step``: ``min(1, step / warmup_iter)``, a float32 tensor."""
        step, warmup = ops.cast(step, "float32"), self.iterations("warmup_iter")
        if warmup == 0:
            return ops.ones_like(step)
        return ops.minimum(1.0, step / float(warmup))

    def is_fixed(self, step):
        """How far training has moved to the decided (``map``) architecture at optimiser
        step ``step`` (float32): 0.0 before ``fixed_from``, then linearly to 1.0 over
        ``transition_iter`` steps (at once when it is 0)."""
        step, transition = ops.cast(step, "float32"), self.iterations("transition_iter")
        if self.fixed_from is None:
            return ops.zeros_like(step)
        if transition == 0:
            return ops.cast(step >= float(self.fixed_from), "float32")
        moved = (step - float(self.fixed_from) + 1.0) / float(transition)
        return ops.clip(moved, 0.0, 1.0)

    def initial_probabilities(self, num_groups: int) -> np.ndarray | None:
        """The ``(G,)`` initial probabilities, or None for ``dirichlet`` (drawn per kernel)."""
        return None if self.init == "dirichlet" else self._vector(self.init, num_groups)

    def prior_probabilities(self, num_groups: int) -> np.ndarray:
        """The ``(G,)`` prior of the KL term."""
        return self._vector(self.prior, num_groups)

    def _vector(self, value, num_groups: int) -> np.ndarray:
        """``uniform``, ``shared`` (``init_shared`` on the shared group, the rest split
        evenly over the tasks) or explicit probabilities, as a ``(G,)`` array."""
        if value == "uniform":
            return np.full(num_groups, 1.0 / num_groups, np.float32)
        if value == "shared":
            tasks = num_groups - 1
            return np.array([(1.0 - self.init_shared) / tasks] * tasks + [self.init_shared],
                            np.float32)
        return np.asarray(value, np.float32)

    def to_dict(self) -> dict:
        return {field.name: (list(value) if isinstance(value, tuple) else value)
                for field in dataclasses.fields(self)
                for value in [getattr(self, field.name)]}

    @classmethod
    def from_dict(cls, config: dict) -> "GroupingConfig":
        config = dict(config)
        for name in ("init", "prior"):
            if isinstance(config.get(name), list):
                config[name] = tuple(config[name])
        return cls(**config)


def connectivity_matrix(connectivity: str, num_groups: int) -> np.ndarray:
    """The G x G routing ``C[g_in, g_out]`` (1 where group g_in feeds group g_out).

    ``mixed``: task t reads {t, shared}, shared reads {shared} (the paper's);
    ``separate``: every group reads itself; ``dense``: every group reads all.
    """
    arguments.one_of(connectivity, "connectivity", CONNECTIVITIES)
    if connectivity == "dense":
        return np.ones((num_groups, num_groups), np.float32)
    matrix = np.eye(num_groups, dtype=np.float32)
    if connectivity == "mixed":
        matrix[-1, :] = 1.0
    return matrix


@keras.saving.register_keras_serializable(package="sfg_app")
class DirichletLogits(keras.initializers.Initializer):
    """Logits ``scale * log(p_k)`` with p_k ~ Dirichlet(alpha, ..., alpha) per kernel (row).

    Probabilities are floored at 1e-6 so that a small ``alpha`` cannot give -inf logits.
    """

    def __init__(self, alpha: float = 1.0, seed: int | None = None, scale: float = 1.0):
        self.alpha = arguments.positive_float(alpha, "init_alpha")
        self.seed = arguments.optional_seed(seed)
        self.scale = arguments.positive_float(scale, "scale")

    def __call__(self, shape, dtype=None):
        draws = keras.random.gamma(shape, alpha=self.alpha, dtype="float32",
                                   seed=self.seed)
        draws = ops.maximum(draws, 1e-30)
        probabilities = draws / ops.sum(draws, axis=-1, keepdims=True)
        return ops.cast(self.scale * ops.log(ops.maximum(probabilities, 1e-6)),
                        dtype or "float32")

    def get_config(self):
        return {"alpha": self.alpha, "seed": self.seed, "scale": self.scale}


@keras.saving.register_keras_serializable(package="sfg_app")
class FilterGrouping(keras.layers.Layer):
    """The group posterior of one SFG layer's ``filters`` kernels, and its samples.

    It holds the logits (``(filters, num_groups)``, trainable unless
    ``grouping.learn_probabilities`` is false), stored divided by
    ``grouping.logit_lr_multiplier`` (read them through ``logits``, set them with
    ``assign_logits``), and a seed generator. It is always float32
    (Gumbel noise and KL in bfloat16 would be too coarse); ``masks`` is cast by its users.
    Calling it gives p; the network asks it for ``masks`` and ``kl_divergence`` and hands
    the masks to the convolutions, normalisations and heads that the layer's kernels feed.
    """

    def __init__(self, filters: int, num_groups: int,
                 grouping: GroupingConfig | dict | None = None, seed: int | None = None,
                 **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        self.filters = arguments.positive_int(filters, "filters")
        self.num_groups = arguments.positive_int(num_groups, "num_groups")
        if self.num_groups < 2:
            raise arguments.invalid("num_groups", num_groups,
                                    "at least 2 groups (one task and the shared group)")
        if isinstance(grouping, dict):
            grouping = GroupingConfig.from_dict(grouping)
        self.grouping = grouping or GroupingConfig()
        self.grouping.check_num_groups(self.num_groups)
        self.seed = arguments.optional_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # A numpy constant, computed here: traced code should not call back into the config.
        self.log_prior = np.log(self.grouping.prior_probabilities(self.num_groups))
        self.measure = (TaskAgreement(self.filters, self.num_groups - 1, name="agreement")
                        if self.grouping.allocation == "agreement" else None)

    def _initializer(self):
        scale = 1.0 / self.grouping.logit_lr_multiplier
        probabilities = self.grouping.initial_probabilities(self.num_groups)
        if probabilities is None:
            return DirichletLogits(self.grouping.init_alpha, self.seed, scale)
        return keras.initializers.Constant(scale * np.log(probabilities))

    def build(self, input_shape=None):
        # The variable keeps the name `logits`, so checkpoints keep their paths.
        self.stored_logits = self.add_weight(
            shape=(self.filters, self.num_groups), initializer=self._initializer(),
            trainable=self.grouping.learn_probabilities, autocast=False, name="logits")
        if self.measure is not None:
            self.measure.build()

    @property
    def logits(self):
        """theta: the ``(filters, num_groups)`` logits, a float32 tensor."""
        return self.stored_logits * self.grouping.logit_lr_multiplier

    def assign_logits(self, logits) -> None:
        """Sets theta (the variable holds it divided by ``logit_lr_multiplier``)."""
        self.stored_logits.assign(ops.convert_to_tensor(logits, "float32")
                                  / self.grouping.logit_lr_multiplier)

    def call(self, inputs=None):
        """The probabilities p (``(filters, num_groups)``); ``inputs`` are ignored."""
        return self.probabilities()

    def compute_output_shape(self, input_shape=None):
        return (self.filters, self.num_groups)

    def log_probabilities(self):
        return ops.log_softmax(self.logits, axis=-1)

    def probabilities(self):
        return ops.softmax(self.logits, axis=-1)

    def kl_divergence(self):
        """sum_k KL(Cat(p_k) || Cat(prior)), a float32 scalar."""
        log_p = self.log_probabilities()
        return ops.sum(ops.exp(log_p) * (log_p - ops.convert_to_tensor(self.log_prior)))

    def masks(self, mode: str, temperature=None, batch_size=None, sampling_share=None,
              fixed=None):
        """Channel-to-group masks for architecture ``mode``.

        ``(filters, G)``, or ``(batch_size, filters, G)`` for training and sampling when
        ``grouping.sample_per == 'example'``. ``train``: concrete samples at
        ``temperature`` (straight-through if configured), moved towards p by
        ``1 - sampling_share`` during the warm-up (``None``: no warm-up); ``sample``:
        one-hot draws from Cat(p); ``map``: one-hot argmax p; ``expected``: p. In
        ``train`` mode, ``fixed`` (a scalar in [0, 1], ``None``: 0; `is_fixed`) moves the
        masks linearly to the ``map`` masks.
        """
        arguments.one_of(mode, "mode", MODES)
        if mode == "train" and self.grouping.allocation == "agreement":
            return self._probe_or_decided(fixed)
        log_p = self.log_probabilities()
        if mode == "map":
            return ops.one_hot(ops.argmax(log_p + self._tie_break(), axis=-1),
                               self.num_groups, dtype="float32")
        if mode == "expected":
            return ops.exp(log_p)
        shape = (self.filters, self.num_groups)
        if self.grouping.sample_per == "example":
            if batch_size is None:
                raise ValueError("`batch_size` is required when sample_per='example'.")
            shape = (batch_size,) + shape
        tiny = float(np.finfo(np.float32).tiny)
        uniform = keras.random.uniform(shape, minval=tiny, maxval=1.0, dtype="float32",
                                       seed=self.seed_generator)
        noisy = log_p - ops.log(-ops.log(uniform))
        hard = ops.one_hot(ops.argmax(noisy, axis=-1), self.num_groups, dtype="float32")
        if mode == "sample":
            return hard
        if temperature is None:
            raise ValueError("`temperature` is required in 'train' mode.")
        soft = ops.softmax(noisy / temperature, axis=-1)
        sampled = soft if not self.grouping.straight_through \
            else soft + ops.stop_gradient(hard - soft)
        if sampling_share is not None and self.grouping.warmup_iter > 0:
            expected = ops.exp(log_p)
            sampled = expected + ops.cast(sampling_share, "float32") * (sampled - expected)
        if self.grouping.logit_gradient in ("shared_mean", "balanced"):
            sampled = self._shared_gradient_per_task(sampled)
        if fixed is None or self.grouping.fixed_from is None:
            return sampled
        decided = ops.stop_gradient(self.masks("map"))
        if len(sampled.shape) == 3:
            decided = ops.broadcast_to(decided, ops.shape(sampled))
        fixed = ops.cast(fixed, "float32")
        return fixed * decided + (1.0 - fixed) * sampled

    def _probe_or_decided(self, fixed):
        """``allocation = agreement`` in training: every kernel shared while the warm-up
        measures the tasks' agreement (a hard-shared network, whose kernels every task's
        gradient reaches), then the decided (``map``) architecture. No gradient reaches
        the logits: the measurement decides them (``allocate``)."""
        shared = np.zeros((self.filters, self.num_groups), np.float32)
        shared[:, -1] = 1.0
        shared = ops.convert_to_tensor(shared)
        if fixed is None:
            return shared
        fixed = ops.cast(fixed, "float32")
        return fixed * ops.stop_gradient(self.masks("map")) + (1.0 - fixed) * shared

    def record_gradients(self, per_task) -> None:
        """Folds one warm-up step of the tasks' gradients on this layer's kernels into
        the agreement measurement (``allocation = agreement``)."""
        self.measure.record(per_task)

    def allocate(self) -> np.ndarray:
        """Decides every kernel's group from the measured agreement (`TaskAgreement`),
        sets the logits to it (probability 0.98 on the chosen group) and returns the
        groups, ``(filters,)``."""
        groups = self.measure.decide(self.grouping.agreement_threshold,
                                     self.grouping.agreement_split)
        probabilities = np.full((self.filters, self.num_groups),
                                0.02 / (self.num_groups - 1), np.float32)
        probabilities[np.arange(self.filters), groups] = 0.98
        self.assign_logits(np.log(probabilities))
        return groups

    def _shared_gradient_per_task(self, masks):
        """``masks`` unchanged, with the gradient of the shared column divided by the
        number of tasks: the shared group's gradient is then the mean of what a kernel
        gives each task it serves, comparable with a specialist's gain for its one task."""
        scale = np.ones(self.num_groups, np.float32)
        scale[-1] = 1.0 / (self.num_groups - 1)
        scaled = masks * ops.convert_to_tensor(scale)
        return scaled + ops.stop_gradient(masks - scaled)

    def _tie_break(self):
        """A nudge of 1e-6 in log-probability towards group ``k mod G`` for kernel k.

        Where a kernel's most probable groups tie (uniform fixed probabilities, or a
        network before training), ``map`` would put every kernel in the first group,
        leaving the other tasks' heads nothing to read; the nudge deals tied kernels out
        in turn instead, and changes no argmax that a real difference decides.
        """
        kernels = np.arange(self.filters)[:, None]
        groups = np.arange(self.num_groups)[None, :]
        return ops.convert_to_tensor(
            1e-6 * ((kernels % self.num_groups) == groups).astype(np.float32))

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, num_groups=self.num_groups,
                      grouping=self.grouping.to_dict(), seed=self.seed)
        return config
