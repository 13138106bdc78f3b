"""The training driver: how an application's objective is minimised.

The application says what to compute (network, data, objective); this driver owns the
loop, the devices (`tf.distribute`), checkpoints, validation, summaries and progress.
Everything that happens beside the gradient step is a handler reacting to the loop's
events, so a new kind of logging is a new handler, not a new branch in the loop.

The loop stops when
- the optimiser's step counter reaches `[TRAINING] max_iter` (a final checkpoint is saved);
- a loss or gradient norm is not finite (TrainingError; nothing is saved, so the last
  checkpoint on disk is the last good state);
- the user interrupts it (a checkpoint of the current iteration is saved, then the
  interrupt is re-raised);
- the process receives SIGTERM, as clusters stop jobs: the step under way (the next
  one, for a signal between steps) finishes, a checkpoint of its iteration is saved,
  and TrainingStopped says how to resume. Only a single-worker run in the main thread
  handles SIGTERM (Python allows signal handlers there only; the workers of a
  multi-worker run must save together, and would wait on each other if each stopped
  at the step it received the signal): elsewhere the signal's own handler runs, and a
  run killed keeps its last checkpoint.
"""

from __future__ import annotations

import math
import signal
import sys
import threading

import keras
import tensorflow as tf

from sfg_app.engine import handlers
from sfg_app.engine.checkpoints import CheckpointStore, random_states
from sfg_app.engine.gradients import ordered_gradient_sums
from sfg_app.engine.state import TrainingOptions, TrainingState, to_numpy
from sfg_app.engine.strategies import (distributed_dataset, dtype_policy, is_chief,
                                       make_strategy)
from sfg_app.errors import TrainingError, TrainingStopped


class TrainingDriver:
    """Runs `application`'s training from `plan`, with handlers beside the loop."""

    def __init__(self, application, plan: TrainingOptions, extra_handlers=()):
        self.application = application
        self.plan = plan
        self.extra_handlers = list(extra_handlers)

    # -- set-up -----------------------------------------------------------------
    def _build(self) -> TrainingState:
        plan = self.plan
        strategy = make_strategy(plan.strategy)
        keras.utils.set_random_seed(plan.seed)
        chief = is_chief(strategy)
        with strategy.scope(), dtype_policy(plan.mixed_precision):
            model = self.application.build_network()
            objective = self.application.build_objective()
            optimiser = self.application.build_optimiser()
            if plan.mixed_precision == "float16":
                optimiser = keras.optimizers.LossScaleOptimizer(optimiser)
            optimiser.build(_trainable(model, objective))
        store = CheckpointStore(plan.model_dir, plan.max_checkpoints, chief=chief,
                                optional={"random": random_states(model)},
                                model=model, objective=objective,
                                # The checkpoint key keeps the spelling saved runs have.
                                optimizer=optimiser)
        state = TrainingState(plan=plan, strategy=strategy, model=model, objective=objective,
                              optimiser=optimiser, checkpoints=store, chief=chief)
        state.first_iteration = state.iteration = self._resume(state)
        return state

    def _resume(self, state: TrainingState) -> int:
        plan, store = self.plan, state.checkpoints
        found = store.iterations()
        if plan.starting_iter == 0:
            if found:
                raise TrainingError(
                    f"[TRAINING] starting_iter = 0 starts afresh, but {store.directory} "
                    f"already has checkpoints (iterations {', '.join(map(str, found))}). "
                    "Set starting_iter = -1 to resume from the latest, or choose a new "
                    "[SYSTEM] model_dir.")
            return 0
        if plan.starting_iter == -1 and not found:
            return 0
        # A float learning rate is an optimiser variable, which the checkpoint holds too;
        # the config's value wins, so that resuming with a changed `lr` does what the
        # config says. (A schedule is not saved, and its value is not settable.)
        configured = state.optimiser.learning_rate
        configured = (float(to_numpy(configured)) if isinstance(configured, keras.Variable)
                      else None)
        iteration = store.restore(plan.starting_iter)
        if configured is not None:
            state.optimiser.learning_rate = configured
        state.last_saved = iteration
        return iteration

    # -- the step ---------------------------------------------------------------
    def _make_train_step(self, state: TrainingState, probe: bool = False):
        """The compiled training step; with ``probe``, it also folds each task's gradients
        on the grouped kernels into the network's agreement measurement. Those come from
        one backward pass per part of the loss (each task's, then the regulariser's,
        which reaches no activation and costs little), whose sum is the step's gradient:
        a probe step costs one backward pass more than a plain one, not one per task."""
        app, model, objective = self.application, state.model, state.objective
        optimiser, strategy = state.optimiser, state.strategy
        variables = _trainable(model, objective)
        replicas = strategy.num_replicas_in_sync
        step_variable = getattr(model, "grouping_step", None)
        scaled = isinstance(optimiser, keras.optimizers.LossScaleOptimizer)

        balanced = {id(v) for v in app.balanced_variables(model)}
        balanced = [i for i, v in enumerate(variables) if id(v) in balanced]
        if probe:
            index = {id(v): i for i, v in enumerate(variables)}
            kernels = [index[id(v)] for layer in model.grouped_kernels() for v in layer]

        def scale(loss):
            loss = loss / replicas
            return optimiser.scale_loss(loss) if scaled else loss

        def replica_step(batch):
            if probe or balanced:  # gradients of each task's loss: a persistent tape
                with tf.GradientTape(persistent=True) as tape:
                    outputs = model(app.network_inputs(batch), training=True)
                    total, logs, (terms, regulariser) = app.loss_parts(
                        model, objective, outputs, batch)
                    parts = [scale(term) for term in terms.values()] + [scale(regulariser)]
                per_part = _gradients_per_part(tape, parts, variables)
                del tape
                gradients = _balanced_gradients(per_part, balanced)
                if probe:  # each task's own gradients, unscaled as its term is
                    unscale = replicas / optimiser.dynamic_scale if scaled else replicas
                    model.record_gradients([[grads[i] * unscale for i in kernels]
                                            for grads in per_part[:-1]])
            else:
                with tf.GradientTape() as tape:
                    outputs = model(app.network_inputs(batch), training=True)
                    total, logs = app.compute_loss(model, objective, outputs, batch)
                    loss = scale(total)
                gradients = tape.gradient(loss, variables)
            if scaled:
                # LossScaleOptimizer unscales in apply; the norm is logged unscaled. It
                # skips a step whose scaled gradients overflowed (and lowers the scale):
                # that step applies nothing, and logs a norm of 0, not a divergence.
                norm = tf.linalg.global_norm(gradients) / optimiser.dynamic_scale
                norm = tf.where(tf.math.is_finite(norm), norm, tf.zeros_like(norm))
            else:
                norm = tf.linalg.global_norm(gradients)
            optimiser.apply_gradients(zip(gradients, variables))
            logs = dict(logs, loss=total, grad_norm=norm * replicas)
            return logs

        @tf.function(jit_compile=False)
        def train_step(batch):
            if step_variable is not None:
                step_variable.assign(tf.cast(optimiser.iterations, step_variable.dtype))
            per_replica = strategy.run(replica_step, args=(batch,))
            return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

        return train_step

    # -- the loop ---------------------------------------------------------------
    def run(self) -> TrainingState:
        state = self._build()
        plan = self.plan
        active = self._default_handlers(state) + self.extra_handlers
        if state.iteration >= plan.max_iter:
            _say(f"Nothing to do: the checkpoint is at iteration {state.iteration}, "
                 f"[TRAINING] max_iter = {plan.max_iter}.")
            return state
        batches = iter(distributed_dataset(
            state, lambda batch, index, count: self.application.training_dataset(
                batch, state.iteration * state.global_batch_size, index, count)))
        train_step = self._make_train_step(state)
        probe_until = self.application.probe_iterations(state.model)
        probe_step = self._make_train_step(state, probe=True) if probe_until else None
        if state.iteration < probe_until:
            _say(f"SFG groups: measured from the tasks' agreement over iterations "
                 f"{state.iteration + 1}-{probe_until} (every kernel shared), then decided "
                 f"([SFG] allocation).")
        with (_SigtermRecorder(enabled=plan.strategy != "multi_worker") as sigterm,
              ordered_gradient_sums()):
            for handler in active:
                handler.on_start(state)
            try:
                while state.iteration < plan.max_iter:
                    probing = state.iteration < probe_until
                    logs = (probe_step if probing else train_step)(next(batches))
                    state.logs = {k: float(v) for k, v in logs.items()}
                    iteration = int(to_numpy(state.optimiser.iterations))
                    if probing and iteration >= probe_until:
                        _say_allocation(state.model.allocate_groups(),
                                        self.application.group_names())
                    skipped = iteration == state.iteration  # by loss scaling (see above)
                    state.iteration = iteration
                    _check_finite(state)
                    if sigterm.received:
                        _stop(state)
                    if skipped:
                        continue
                    for handler in active:
                        handler.on_step_end(state)
            except KeyboardInterrupt:
                if state.last_saved != state.iteration:
                    handlers.save_checkpoint(state)
                    _say(f"\nInterrupted: saved a checkpoint of iteration {state.iteration}.")
                raise
            finally:
                self.application.close()
            # A SIGTERM from here on is recorded and ignored: the run is finishing.
            for handler in active:
                handler.on_end(state)
        return state

    def _default_handlers(self, state: TrainingState) -> list[handlers.Handler]:
        plan = self.plan
        chosen: list[handlers.Handler] = [handlers.CheckpointHandler(plan.save_every_n)]
        if plan.validation_every_n > 0:
            chosen.append(handlers.ValidationHandler(self.application, plan.validation_every_n,
                                                     plan.validation_max_iter))
        if state.chief:
            chosen.append(handlers.SummaryHandler(self.application, plan.tensorboard_every_n))
            chosen.append(handlers.ProgressHandler())
        return chosen


def _gradients_per_part(tape, parts, variables) -> list:
    """``[[gradient of part p on each variable]]``, zeros where a part does not reach."""
    return [[tf.zeros(v.shape, "float32") if g is None else g
             for v, g in zip(variables, tape.gradient(part, variables))]
            for part in parts]


def _balanced_gradients(per_part, balanced) -> list:
    """The gradient of the sum of the parts (the tasks' terms, then the regulariser)
    from each part's gradients, except that on the variables at indices ``balanced``
    (the grouping logits of every SFG layer, taken together) each task's gradient is
    first scaled to the tasks' mean root-mean-square size: every task pulls on the
    architecture as hard as the others, and spreads that pull over the layers where its
    loss needs kernels, so that a task with larger gradients does not decide the
    grouping alone (none: the plain sum). Sums run in the order of the parts, so the
    bits do not depend on the process."""
    tasks = per_part[:-1]
    if not balanced:
        return [_sum_in_order([grads[index] for grads in per_part])
                for index in range(len(per_part[0]))]
    sizes = [tf.sqrt(_sum_in_order([tf.reduce_sum(tf.square(grads[i])) for i in balanced]))
             for grads in tasks]
    mean = _sum_in_order(sizes)
    scales = [tf.math.divide_no_nan(mean / len(sizes), size) for size in sizes]
    gradients = []
    for index in range(len(per_part[0])):
        terms = [grads[index] * scale if index in balanced else grads[index]
                 for grads, scale in zip(tasks, scales)] + [per_part[-1][index]]
        gradients.append(_sum_in_order(terms))
    return gradients


def _sum_in_order(terms):
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _say_allocation(groups: dict, names: list) -> None:
    """One line a layer: how many kernels the measured agreement gave each group."""
    for layer, assigned in groups.items():
        counts = ", ".join(f"{name} {int((assigned == g).sum())}"
                           for g, name in enumerate(names))
        _say(f"{layer}: groups decided from the tasks' agreement: {counts}")


def _trainable(model, objective) -> list:
    return list(model.trainable_variables) + list(objective.trainable_variables)


def _check_finite(state: TrainingState) -> None:
    bad = {k: v for k, v in state.logs.items() if not math.isfinite(v)}
    if not bad:
        return
    last = (f"the last checkpoint, of iteration {state.last_saved}, holds the last good "
            f"state and still loads" if state.last_saved is not None else
            "no checkpoint was saved before it")
    raise TrainingError(
        f"Training stopped at iteration {state.iteration}: "
        f"{', '.join(f'{k} = {v}' for k, v in sorted(bad.items()))}. Nothing was saved "
        f"after the failure; {last} ({state.checkpoints.directory}). A learning rate that "
        "is too high is the usual cause: lower [TRAINING] lr, or set gradient_clip_norm.")


class _SigtermRecorder:
    """While a run trains, SIGTERM is recorded (`received`) instead of ending the process,
    and the loop stops after the step under way; the previous handler is back afterwards.

    A second SIGTERM only records it again: one that arrives while the checkpoint is
    being saved cannot cut the save short. Disabled outside the main thread, where
    Python refuses signal handlers.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received = False
        self._previous = None

    def __enter__(self) -> "_SigtermRecorder":
        if self.enabled:
            self._previous = signal.signal(signal.SIGTERM, self._record)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.enabled:
            # None: the previous handler was not set from Python (nor can be restored).
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGTERM, previous)

    def _record(self, signum, frame) -> None:
        self.received = True


def _stop(state: TrainingState) -> None:
    """Save the current iteration (unless it is saved) and stop with TrainingStopped."""
    if state.last_saved != state.iteration:
        handlers.save_checkpoint(state)
    raise TrainingStopped(
        f"Stopped by SIGTERM at iteration {state.iteration}: a checkpoint of iteration "
        f"{state.iteration} is in {state.checkpoints.directory}. Run the same sfg_train "
        "command to resume.")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
