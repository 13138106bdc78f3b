"""How well the tasks' gradients agree on each kernel of an SFG layer, and the groups that
follow from it (`[SFG] allocation = agreement`).

Why: the learned logits' straight-through gradient says how the loss would change if a
kernel's output reached one more head, a first-order quantity that never sees what
specialist kernels protect against, the tasks' gradients pulling one kernel's weights
different ways; and it grows with the number of heads a kernel feeds, so the start and the
prior decided where the logits ended (docs/results.md). Measured while every kernel is
shared (every task's gradient reaches every kernel), the cosine between two tasks'
gradients on a kernel's weights says whether a step for one task is a step for the other.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from sfg_app import arguments
from sfg_app.config.schema import SFG

DECAY = 0.97  # the moving averages' weight of the past: about 30 steps
SPLITS = SFG.keys["agreement_split"].type.options


@keras.saving.register_keras_serializable(package="sfg_app")
class TaskAgreement(keras.layers.Layer):
    """Moving averages, per kernel of one SFG layer, of each task's gradient energy (sum of
    squares over the kernel's weights) and of every task pair's gradient dot product; and
    the groups they decide. Float32 variables, saved with the checkpoints, so a run stopped
    in its warm-up resumes the measurement."""

    def __init__(self, filters: int, tasks: int, **kwargs):
        kwargs.pop("dtype", None)
        super().__init__(dtype="float32", **kwargs)
        self.filters = arguments.positive_int(filters, "filters")
        self.tasks = arguments.positive_int(tasks, "tasks")
        self.pairs = [(i, j) for i in range(self.tasks) for j in range(i + 1, self.tasks)]

    def build(self, input_shape=None):
        options = dict(initializer="zeros", trainable=False, autocast=False,
                       aggregation="mean")
        self.task_energy = self.add_weight(shape=(self.filters, self.tasks),
                                           name="task_energy", **options)
        self.task_dots = self.add_weight(shape=(self.filters, max(1, len(self.pairs))),
                                         name="task_dots", **options)

    def record(self, per_task, decay: float = DECAY) -> None:
        """Folds one step into the averages. ``per_task[t]`` lists task t's gradients on
        the weights whose last axis is the layer's kernels (its convolutions)."""
        per_task = [[ops.cast(g, "float32") for g in grads] for grads in per_task]

        def per_kernel(tensor):
            return ops.sum(ops.reshape(tensor, (-1, self.filters)), axis=0)

        energy = ops.stack([sum(per_kernel(ops.square(g)) for g in grads)
                            for grads in per_task], axis=-1)
        dots = [sum(per_kernel(a * b) for a, b in zip(per_task[i], per_task[j]))
                for i, j in self.pairs]
        dots = ops.stack(dots, axis=-1) if dots else ops.zeros((self.filters, 1))
        self.task_energy.assign(decay * self.task_energy + (1.0 - decay) * energy)
        self.task_dots.assign(decay * self.task_dots + (1.0 - decay) * dots)

    def cosines(self) -> np.ndarray:
        """Per kernel, the mean over task pairs of the cosine between their gradients
        (the averaged dot product over the averaged energies), ``(filters,)``."""
        energy, dots = self._numpy(self.task_energy), self._numpy(self.task_dots)
        if not self.pairs:
            return np.zeros(self.filters)
        return np.mean([dots[:, n] / np.sqrt(energy[:, i] * energy[:, j] + 1e-30)
                        for n, (i, j) in enumerate(self.pairs)], axis=0)

    def decide(self, threshold: float, split: str) -> np.ndarray:
        """Each kernel's group (``0..tasks - 1`` a task's, ``tasks`` the shared one).

        A kernel whose cosine passes ``threshold`` is shared: a step for one task moves
        its weights the way the others need too. The others are split between the tasks
        (``split``):

        - ``pull``: each goes to the task whose (weighted) loss pulls hardest on its
          weights, the larger gradient energy. The losses' scales then decide: on the CT
          pair the synthesis pulled hardest on the last layer and took 24 to 31 of its 32
          kernels, and the organs, left with the rest, failed (docs/results.md).
        - ``even``: each task gets an equal number (the first tasks one more where they do
          not divide), and takes those that carry the largest share of its own energy in
          the layer: the kernels a task relies on most, whatever its loss's scale.

        A task left without a kernel in the layer (none its own, none shared) gets the one
        it pulls hardest: with mixed connectivity it would otherwise lose every path to
        its head.
        """
        arguments.one_of(split, "split", SPLITS)
        energy = self._numpy(self.task_energy)
        shared = self.cosines() > threshold
        if split == "pull":
            groups = np.where(shared, self.tasks, np.argmax(energy, axis=1))
        else:
            groups = np.full(self.filters, self.tasks)
            groups[~shared] = _even_split(energy[~shared] / (energy.sum(axis=0) + 1e-30))
        if not np.any(groups == self.tasks):
            for task in range(self.tasks):
                if not np.any(groups == task):
                    free = [k for k in np.argsort(-energy[:, task], kind="stable")
                            if np.sum(groups == groups[k]) > 1]
                    if free:
                        groups[free[0]] = task
        return groups

    @staticmethod
    def _numpy(variable) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(variable), np.float64)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, tasks=self.tasks)
        return config


def _even_split(shares: np.ndarray) -> np.ndarray:
    """The task of each row of ``shares`` (kernels x tasks: each kernel's share of each
    task's energy), every task getting ``len // tasks`` kernels (the first ones one more
    for the remainder): the largest share left is assigned first, greedily."""
    kernels, tasks = shares.shape
    quota = np.full(tasks, kernels // tasks)
    quota[:kernels % tasks] += 1
    groups = np.full(kernels, -1)
    order = np.argsort(-shares, axis=None, kind="stable")
    for kernel, task in zip(*np.unravel_index(order, shares.shape)):
        if groups[kernel] < 0 and quota[task] > 0:
            groups[kernel] = task
            quota[task] -= 1
    return groups
